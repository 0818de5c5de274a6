//! The pull requests' lives: random, but replayable from a seed. Each step changes one pull
//! request on the stand-in (which delivers nothing: it has no hook) and hands back the delivery
//! GitHub would have sent for it.

use github_standin::{Delivered, NewPr, StandIn};

/// The label the second template requires.
pub const PREVIEW: &str = "preview";
/// A label no template cares about (a `labeled` delivery that changes nothing but the facts).
pub const DOCS: &str = "docs";

/// A small seeded generator (SplitMix64): the same seed gives the same run plan.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn percent(&mut self, p: usize) -> bool {
        self.below(100) < p
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

/// `PRENV_CHAOS_SEED` when set (to replay a run), else a fresh one.
pub fn seed() -> u64 {
    match std::env::var("PRENV_CHAOS_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("PRENV_CHAOS_SEED={s:?} is not a number")),
        Err(_) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock after 1970");
            Rng::new(now.as_nanos() as u64 ^ u64::from(std::process::id())).next() >> 16
        }
    }
}

/// One change to a pull request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Open { draft: bool, preview: bool },
    Push,
    Label(&'static str),
    Unlabel(&'static str),
    Draft(bool),
    Close,
    Merge,
    Reopen,
}

/// What the test knows of one pull request while planning (only to pick valid changes: the
/// truth checked at the end is read back from the stand-in).
#[derive(Debug, Default)]
struct Life {
    opened: bool,
    open: bool,
    merged: bool,
    draft: bool,
    labels: Vec<&'static str>,
    /// Changes still to make.
    budget: usize,
}

impl Life {
    fn has(&self, label: &str) -> bool {
        self.labels.contains(&label)
    }

    /// A valid next change, drawn with weights that keep most pull requests open and busy.
    fn choose(&self, rng: &mut Rng) -> Op {
        if !self.opened {
            return Op::Open {
                draft: rng.percent(20),
                preview: rng.percent(45),
            };
        }
        if !self.open {
            return Op::Reopen;
        }
        let mut choices: Vec<(Op, usize)> = vec![(Op::Push, 30), (Op::Close, 9), (Op::Merge, 3)];
        for (label, weight) in [(PREVIEW, 14), (DOCS, 5)] {
            if self.has(label) {
                choices.push((Op::Unlabel(label), weight));
            } else {
                choices.push((Op::Label(label), weight));
            }
        }
        choices.push((Op::Draft(!self.draft), 8));
        let total: usize = choices.iter().map(|(_, w)| w).sum();
        let mut pick = rng.below(total);
        for (op, weight) in choices {
            if pick < weight {
                return op;
            }
            pick -= weight;
        }
        unreachable!("a choice within the total weight")
    }

    fn record(&mut self, op: Op) {
        match op {
            Op::Open { draft, preview } => {
                self.opened = true;
                self.open = true;
                self.draft = draft;
                if preview {
                    self.labels.push(PREVIEW);
                }
            }
            Op::Push => {}
            Op::Label(l) => self.labels.push(l),
            Op::Unlabel(l) => self.labels.retain(|x| *x != l),
            Op::Draft(d) => self.draft = d,
            Op::Close => self.open = false,
            Op::Merge => {
                self.open = false;
                self.merged = true;
            }
            Op::Reopen => self.open = true,
        }
        self.budget = if self.merged { 0 } else { self.budget - 1 };
    }
}

/// The lives of a number of pull requests, each of 6 to 13 changes (fewer once merged),
/// interleaved at random: the whole plan is drawn up front from the seed.
pub struct Plan {
    /// Which pull request (by index) changes how, in order.
    steps: Vec<(usize, Op)>,
    /// The stand-in's number of each pull request, once opened.
    numbers: Vec<Option<u64>>,
}

impl Plan {
    /// A plan of at least `min_steps` changes (drawn again until it has them).
    pub fn new(rng: &mut Rng, prs: usize, min_steps: usize) -> Plan {
        loop {
            let plan = Self::draw(rng, prs);
            if plan.len() >= min_steps {
                return plan;
            }
        }
    }

    fn draw(rng: &mut Rng, prs: usize) -> Plan {
        let mut lives: Vec<Life> = (0..prs)
            .map(|_| Life {
                budget: 6 + rng.below(8),
                ..Life::default()
            })
            .collect();
        let mut steps = Vec::new();
        loop {
            let active: Vec<usize> = (0..prs).filter(|i| lives[*i].budget > 0).collect();
            if active.is_empty() {
                break;
            }
            let i = active[rng.below(active.len())];
            let op = lives[i].choose(rng);
            lives[i].record(op);
            steps.push((i, op));
        }
        Plan {
            steps,
            numbers: vec![None; prs],
        }
    }

    /// How many changes the plan makes.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// Make change `step` on `github` and return the delivery it calls for.
    pub async fn apply(&mut self, step: usize, github: &StandIn, repo: &str) -> Delivered {
        let (pr, op) = self.steps[step];
        let delivered = change(github, repo, self.numbers[pr], op).await;
        assert_eq!(
            delivered.status, 0,
            "the stand-in has no hook: nothing sent"
        );
        let number = delivered.payload["number"]
            .as_u64()
            .expect("a pull_request delivery names its number");
        self.numbers[pr] = Some(number);
        delivered
    }

    /// The numbers of every pull request opened so far.
    pub fn numbers(&self) -> Vec<u64> {
        self.numbers.iter().flatten().copied().collect()
    }
}

/// Make change `op` to pull request `number` (`None` before it is opened).
async fn change(github: &StandIn, repo: &str, number: Option<u64>, op: Op) -> Delivered {
    const BY: &str = "maintainer";
    let n = || number.expect("opened before it changes");
    let done = match op {
        Op::Open { draft, preview } => {
            // Each on its own head branch (`feature-<number>`).
            let mut pr = NewPr::new("Chaos").author("octocat").draft(draft);
            if preview {
                pr = pr.label(PREVIEW);
            }
            github.open_pr(repo, pr).await
        }
        Op::Push => github.push(repo, n()).await,
        Op::Label(label) => github.add_label(repo, n(), label, BY).await,
        Op::Unlabel(label) => github.remove_label(repo, n(), label, BY).await,
        Op::Draft(draft) => github.set_draft(repo, n(), draft).await,
        Op::Close => github.close(repo, n(), false).await,
        Op::Merge => github.close(repo, n(), true).await,
        Op::Reopen => github.reopen(repo, n()).await,
    };
    done.unwrap_or_else(|e| panic!("{op:?} on #{number:?}: {e}"))
}
