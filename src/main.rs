use anyhow::Context as _;
use clap::Parser;
use prenv::cli::{Cli, Command, init_logging};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds => print!("{}", prenv::model::crds_yaml()?),
        Command::Render(args) => print!(
            "{}",
            prenv::dryrun::render_files(&args.template, &args.event)?
        ),
        Command::Serve(args) => {
            init_logging(cli.log_format);
            let config = args.into_config()?;
            let shutdown = tokio_util::sync::CancellationToken::new();
            prenv::serve::cancel_on_signals(shutdown.clone());
            prenv::serve::serve(config, shutdown)
                .await
                .context("prenv serve")?;
        }
    }
    Ok(())
}
