//! A fixed RSA key pair for GitHub App tests (generated once with `openssl genrsa
//! -traditional 2048`; test-only, it protects nothing). The private key is in GitHub's own
//! format (PKCS#1 PEM), as downloaded from an App's settings page.

/// The App's private key: give it to the client (prenv `--github-app-key-file`, octocrab
/// `EncodingKey::from_rsa_pem`).
pub const APP_PRIVATE_KEY_PEM: &str = "\
-----BEGIN RSA PRIVATE KEY-----\n\
MIIEpQIBAAKCAQEA49JBz3V92bfKut4ghUQkdga8hkwup5IFm92tbU8RjIHY2TOy\n\
ZeN+a9a8YZ1pf/mCK96iMwEVoEX0P4d3BXW1ObeAgO3wDquSrjTh34kPwFmkHd+w\n\
CRpUWPeFo3DxVp/tBfkTrmBjYEjJFwo+/TdPeWsfaX+lU31VmjwJH+/GMovsaK/T\n\
tm/M5duZn2QyQtpbrCSU0L3LOgMzFXGwGKhWNT9dH9l5SQJUGfWrdjbMHp+3CJPx\n\
MzoQ909W0jBvAEcbBM7OYb/L+R8Sxx41H25CZj46ZhLvSE0Ney7WLT1v9kxjaaHc\n\
Hu6fn3f72+bwa2ouR1kJn5UkGl7tGDavCijfjQIDAQABAoIBAEbuPSAu5/6DuyJg\n\
K0bitulqYoL7sCDrFUT4iVj5n7Cb8tx5PId9g2xm4KMRw/mcwPsQp3Zy1X1fmlK3\n\
RgbUpZZxPBioPDANGi+T9mlG/rj4D+FfNis3X+CNPDXtYa6DP2Q3LvoBN5+QOc+r\n\
GH51HJDkmdSacepjIOZS39JqME6m7JEg+ognZEQF/P/ecnMkLohmfAXl9TVAes/K\n\
9342GrtULAWOTCCvPefz0ylWNKc4Y/2EjY2AY6q0KuRNacuEq/yZjcx52g7C7I87\n\
kHClAff/uoHKGsK1yt+sLu9Ak9TlXYKC7hcjWbh38pWQN37F9+HEp+Ehe0eQeLdN\n\
ULuTZ98CgYEA9Hl3G1q+XSfucM1SWzjr85xEIb+jPXKKepqAQiQ4Lqd/E9bfgveJ\n\
nZkdeGdQfDOsUHZxCjoPl1fC8GOMl+OKo2PKQjoOT6ztn+WZ5ncN47ot7dakOYVx\n\
NeyKkesAnPTpyzdaIqgw5GVDMq/6NtSjrarEh+bbCJJvabd1v3GrIwMCgYEA7o/O\n\
htLrzXt3OXI3jM7K+UPZcYAAEtkvPIawbH2vxV+1JAuAhlMJAZcWDRDtc3zBqiid\n\
lB+aInaX4PWSNI6+kZinua3Cut1HOzYTtwvTMRKbpNkYrGdrxyDZRFW3Kv+2yY4O\n\
h/Y0nXnoXa5yJBzwb7CnVJ09aVYEZjEiS13ZJi8CgYEA1gYYbcwtZ6RzrDEz7kSQ\n\
3D5rrxf0MvE5pkfoDP9kaAOezqGIH0HSKjRHhob8AR/DtNVb9NYLnDTqpkSgasB7\n\
OLs98Gie6sW7agY5i3eio0D0wIjuUKUwDUM9tK0FZmNK4etdb4XK98hm4dMJvEK/\n\
4GPllgxWqNR50RUZcjZy2j0CgYEA0F33C7fKkg2XEyv57RjqHFHw6LveVJgyM/GI\n\
wxn8nq57ruIE/k4kfakTb5IrdEWxeghDqo73t8ZR3gFgFFvhg5YMWZe1kDWZ89PF\n\
4ImJi0EvhQrCDEPA1YqReqhLdlkntGBJvOOFDU7fcIPf2j8Umtl3LeaxLwIckY20\n\
4JM2Ca0CgYEA2R8qEKooNe2OiqAi1y5Ijhk9Au6q3msxTO1HbKLqqI4XDlDfuNKw\n\
qmHjzwGt3qqTsHxUjRUyYBiDgdN09wgwKHWWM2epp8/rivBj+Izf6oiW4mXU/AjV\n\
6pYF6BMH/yeTrUJVo+jLER5WoEcYUJWrRIV13euUqpJ/Xh2lcQ8tGd4=\n\
-----END RSA PRIVATE KEY-----\n\
";

/// Its public half: give it to the stand-in ([`crate::AppConfig::new`]).
pub const APP_PUBLIC_KEY_PEM: &str = "\
-----BEGIN PUBLIC KEY-----\n\
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA49JBz3V92bfKut4ghUQk\n\
dga8hkwup5IFm92tbU8RjIHY2TOyZeN+a9a8YZ1pf/mCK96iMwEVoEX0P4d3BXW1\n\
ObeAgO3wDquSrjTh34kPwFmkHd+wCRpUWPeFo3DxVp/tBfkTrmBjYEjJFwo+/TdP\n\
eWsfaX+lU31VmjwJH+/GMovsaK/Ttm/M5duZn2QyQtpbrCSU0L3LOgMzFXGwGKhW\n\
NT9dH9l5SQJUGfWrdjbMHp+3CJPxMzoQ909W0jBvAEcbBM7OYb/L+R8Sxx41H25C\n\
Zj46ZhLvSE0Ney7WLT1v9kxjaaHcHu6fn3f72+bwa2ouR1kJn5UkGl7tGDavCijf\n\
jQIDAQAB\n\
-----END PUBLIC KEY-----\n\
";
