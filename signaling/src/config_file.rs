//! `hush-server --config FILE`: a TOML file whose keys are the server's long
//! flags without the dashes (`listen = "0.0.0.0:443"`, `max-rooms = 200`,
//! `public-ip = ["203.0.113.7"]`, `no-media = true`), turned into the
//! command-line arguments those flags would be. Precedence: the command
//! line, then the environment (`HUSH_…`), then the file, then the defaults:
//! a key whose flag was given or whose variable is set is left out.

use thiserror::Error;

/// One flag the file may set, as the command-line parser knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagSpec {
    /// The long name, without dashes (`max-rooms`).
    pub long: String,
    /// Its environment variable, if it has one.
    pub env: Option<String>,
    /// A switch (present or absent, no value): the key takes `true` or `false`.
    pub switch: bool,
    /// The separator of a flag that takes a list in one value (`,`).
    pub delimiter: Option<char>,
}

/// Why a configuration file was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigFileError {
    /// Not TOML.
    #[error("not valid TOML: {0}")]
    Syntax(String),
    /// A key that names no flag.
    #[error(
        "unknown key `{key}` (keys are the long flags of `hush-server --help`, without the dashes)"
    )]
    UnknownKey {
        /// The key.
        key: String,
    },
    /// A value of the wrong kind for its key.
    #[error("key `{key}`: {problem}")]
    BadValue {
        /// The key.
        key: String,
        /// What is wrong.
        problem: String,
    },
}

/// Keys that may not come from the file itself.
const NOT_IN_FILE: &[&str] = &["config", "check-config", "help", "version"];

/// The arguments (`--long=value`, or `--long` for a switch set to true)
/// that `text` stands for, leaving out every flag `on_command_line` says
/// was given and every flag whose environment variable `env_set` says is
/// set. Keys are checked against `flags` whether or not they are used.
pub fn args_from_toml(
    text: &str,
    flags: &[FlagSpec],
    on_command_line: &dyn Fn(&str) -> bool,
    env_set: &dyn Fn(&str) -> bool,
) -> Result<Vec<String>, ConfigFileError> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigFileError::Syntax(e.message().to_owned()))?;
    let mut args = Vec::new();
    for (key, value) in &table {
        let flag = flags
            .iter()
            .find(|f| f.long == *key && !NOT_IN_FILE.contains(&key.as_str()))
            .ok_or_else(|| ConfigFileError::UnknownKey { key: key.clone() })?;
        let bad = |problem: &str| ConfigFileError::BadValue {
            key: key.clone(),
            problem: problem.to_owned(),
        };
        let arg = if flag.switch {
            match value {
                toml::Value::Boolean(true) => Some(format!("--{key}")),
                toml::Value::Boolean(false) => None,
                _ => return Err(bad("expected true or false")),
            }
        } else {
            let text = match value {
                toml::Value::Array(items) => {
                    let Some(sep) = flag.delimiter else {
                        return Err(bad("takes one value, not a list"));
                    };
                    let parts = items
                        .iter()
                        .map(|v| {
                            scalar(v).ok_or_else(|| bad("list items must be strings or numbers"))
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    parts.join(&sep.to_string())
                }
                v => scalar(v).ok_or_else(|| bad("expected a string, a number or a list"))?,
            };
            Some(format!("--{key}={text}"))
        };
        let overridden = on_command_line(key) || flag.env.as_deref().is_some_and(env_set);
        if let Some(arg) = arg.filter(|_| !overridden) {
            args.push(arg);
        }
    }
    Ok(args)
}

fn scalar(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags() -> Vec<FlagSpec> {
        let f = |long: &str, env: Option<&str>, switch: bool, delimiter: Option<char>| FlagSpec {
            long: long.into(),
            env: env.map(Into::into),
            switch,
            delimiter,
        };
        vec![
            f("listen", Some("HUSH_LISTEN"), false, None),
            f("max-rooms", Some("HUSH_MAX_ROOMS"), false, None),
            f("public-ip", Some("HUSH_PUBLIC_IP"), false, Some(',')),
            f("no-media", None, true, None),
            f("config", Some("HUSH_CONFIG"), false, None),
        ]
    }

    fn args(text: &str) -> Result<Vec<String>, ConfigFileError> {
        args_from_toml(text, &flags(), &|_| false, &|_| false)
    }

    #[test]
    fn keys_become_the_flags_they_name() {
        let got = args(
            "listen = \"0.0.0.0:443\"\nmax-rooms = 20\npublic-ip = [\"203.0.113.7\", \"2001:db8::1\"]\nno-media = true\n",
        );
        assert_eq!(
            got,
            Ok(vec![
                "--listen=0.0.0.0:443".to_owned(),
                "--max-rooms=20".to_owned(),
                "--no-media".to_owned(),
                "--public-ip=203.0.113.7,2001:db8::1".to_owned(),
            ])
        );
        assert_eq!(args("no-media = false"), Ok(vec![]));
    }

    #[test]
    fn the_command_line_and_the_environment_win_over_the_file() {
        let text = "listen = \"0.0.0.0:443\"\nmax-rooms = 20\n";
        let cli = args_from_toml(text, &flags(), &|k| k == "listen", &|_| false);
        assert_eq!(cli, Ok(vec!["--max-rooms=20".to_owned()]));
        let env = args_from_toml(text, &flags(), &|_| false, &|v| v == "HUSH_MAX_ROOMS");
        assert_eq!(env, Ok(vec!["--listen=0.0.0.0:443".to_owned()]));
    }

    #[test]
    fn mistakes_are_named() {
        assert_eq!(
            args("max-room = 3"),
            Err(ConfigFileError::UnknownKey {
                key: "max-room".into()
            })
        );
        assert!(matches!(
            args("config = \"other.toml\""),
            Err(ConfigFileError::UnknownKey { .. })
        ));
        assert!(
            matches!(args("no-media = \"yes\""), Err(ConfigFileError::BadValue { key, .. }) if key == "no-media")
        );
        assert!(
            matches!(args("listen = [\"a\", \"b\"]"), Err(ConfigFileError::BadValue { key, .. }) if key == "listen")
        );
        assert!(matches!(
            args("max-rooms = { a = 1 }"),
            Err(ConfigFileError::BadValue { .. })
        ));
        assert!(matches!(args("listen = "), Err(ConfigFileError::Syntax(_))));
        // A key that is overridden is still checked.
        let overridden = args_from_toml("max-room = 3", &flags(), &|_| true, &|_| true);
        assert!(matches!(
            overridden,
            Err(ConfigFileError::UnknownKey { .. })
        ));
    }
}
