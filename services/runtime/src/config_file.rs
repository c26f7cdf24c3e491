//! The optional configuration file every service takes (`--config FILE`, or
//! `FLEET_CONFIG`): flat TOML whose keys are the service's long flags,
//!
//! ```toml
//! metrics-addr = "0.0.0.0:9181"
//! max-in-flight = 4000
//! ```
//!
//! A setting comes from, in order: the command line, its `FLEET_*` variable, the file,
//! the default. The file is checked whole before anything starts: every unknown key and
//! every bad value is named with its line, and the process exits with a usage error.
//! There is no second parser: each value goes through the flag's own value parser, so
//! the file accepts exactly what the flag accepts.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Command, Parser};

const CONFIG_ARG: &str = "config";

/// Parses the command line, the environment and the configuration file into `P`;
/// on any error, prints it and exits as clap does (status 2 for usage errors).
pub fn parse<P: Parser>() -> P {
    match try_parse_from(std::env::args_os()) {
        Ok(parsed) => parsed,
        Err(Error::Clap(e)) => e.exit(),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Clap(#[from] clap::Error),
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the configuration file {path} is not TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("the configuration file {path} has {} bad setting(s):\n{}", problems.len(), problems.join("\n"))]
    Settings {
        path: PathBuf,
        problems: Vec<String>,
    },
}

/// [`parse`] over `args` (the first is the program name).
pub fn try_parse_from<P, I, T>(args: I) -> Result<P, Error>
where
    P: Parser,
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let command = with_config_arg(P::command());
    let mut args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let first = command.clone().try_get_matches_from(&args)?;
    if let Some(path) = first.get_one::<PathBuf>(CONFIG_ARG) {
        let from_file = settings_from_file(&command, &first, path)?;
        // After the program name, before the user's own arguments.
        args.splice(1.min(args.len())..1.min(args.len()), from_file);
    }
    let mut matches = command.try_get_matches_from(&args)?;
    Ok(P::from_arg_matches_mut(&mut matches)?)
}

fn with_config_arg(command: Command) -> Command {
    command.arg(
        Arg::new(CONFIG_ARG)
            .long(CONFIG_ARG)
            .env("FLEET_CONFIG")
            .value_name("FILE")
            .value_parser(clap::value_parser!(PathBuf))
            .help("A TOML file of settings named like the flags (a flag or its variable wins)"),
    )
}

/// The file's settings as arguments, leaving out those the command line or the
/// environment already set; every unknown key or bad value is an error.
fn settings_from_file(
    command: &Command,
    given: &ArgMatches,
    path: &Path,
) -> Result<Vec<OsString>, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| Error::Syntax {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let mut problems = Vec::new();
    let mut args = Vec::new();
    for (key, value) in &table {
        let line = line_of(&text, key);
        let at = format!("line {line}");
        let Some(arg) = command
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()) && a.get_id() != CONFIG_ARG)
        else {
            problems.push((line, format!("  {at}: unknown key `{key}`")));
            continue;
        };
        let flag = arg.get_action().takes_values();
        let value = match (value, flag) {
            (toml::Value::Boolean(b), false) => b.to_string(),
            (_, false) => {
                problems.push((line, format!("  {at}: `{key}` must be true or false")));
                continue;
            }
            (v, true) => match scalar(v) {
                Some(s) => s,
                None => {
                    problems.push((
                        line,
                        format!("  {at}: `{key}` must be a string, number or boolean"),
                    ));
                    continue;
                }
            },
        };
        // The flag's own parser judges the value: the file accepts what the flag does.
        if flag
            && let Err(e) = command
                .clone()
                .try_get_matches_from(["check", &format!("--{key}={value}")])
        {
            let reason = e.to_string();
            let reason = reason.lines().next().unwrap_or_default();
            let reason = reason.strip_prefix("error: ").unwrap_or(reason);
            problems.push((line, format!("  {at}: `{key}` = {value:?}: {reason}")));
            continue;
        }
        let id = arg.get_id().as_str();
        let source = given.value_source(id);
        if matches!(
            source,
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        if flag {
            args.push(format!("--{key}={value}").into());
        } else if value == "true" {
            args.push(format!("--{key}").into());
        }
    }
    if problems.is_empty() {
        return Ok(args);
    }
    problems.sort();
    Err(Error::Settings {
        path: path.to_owned(),
        problems: problems.into_iter().map(|(_, p)| p).collect(),
    })
}

fn scalar(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The 1-based line where `key` is set or opens a section (0 if it cannot be found,
/// e.g. a quoted key).
fn line_of(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            let l = l.trim();
            let assigned = l
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='));
            assigned || l == format!("[{key}]")
        })
        .map_or(0, |i| i + 1)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[arg(long, env = "FLEET_TEST_CONFIG_ADDR", default_value = "127.0.0.1:9181")]
        metrics_addr: SocketAddr,
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        refresh: Duration,
        #[arg(long, default_value_t = 100)]
        window: usize,
        #[arg(long)]
        exit: bool,
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        f.write_all(text.as_bytes()).expect("write");
        f
    }

    fn parse_with(text: &str, extra: &[&str]) -> Result<Cli, Error> {
        let f = file(text);
        let path = f.path().display().to_string();
        let mut args = vec!["svc", "--config", &path];
        args.extend(extra);
        try_parse_from(args)
    }

    #[test]
    fn the_file_sets_what_the_command_line_does_not() {
        let cli = parse_with(
            "metrics-addr = \"0.0.0.0:9300\"\nrefresh = \"1m\"\nwindow = 7\nexit = true\n",
            &["--window", "9"],
        )
        .expect("valid");
        assert_eq!(cli.metrics_addr, "0.0.0.0:9300".parse().expect("addr"));
        assert_eq!(cli.refresh, Duration::from_secs(60));
        assert_eq!(cli.window, 9, "the command line wins over the file");
        assert!(cli.exit);
    }

    #[test]
    fn every_unknown_key_and_bad_value_is_named_with_its_line() {
        let err = parse_with(
            "window = 3\nmetric-addr = \"x\"\nrefresh = \"soon\"\nwindow2 = 1\n[section]\n",
            &[],
        )
        .expect_err("bad file");
        let message = err.to_string();
        for expected in [
            "4 bad setting(s)",
            "line 2: unknown key `metric-addr`",
            "line 3: `refresh` = \"soon\"",
            "line 4: unknown key `window2`",
            "line 5: unknown key `section`",
        ] {
            assert!(
                message.contains(expected),
                "{expected:?} not in:\n{message}"
            );
        }
    }

    #[test]
    fn without_a_file_it_is_plain_clap() {
        let cli: Cli = try_parse_from(["svc", "--window", "4"]).expect("valid");
        assert_eq!(cli.window, 4);
        let missing = try_parse_from::<Cli, _, _>(["svc", "--config", "/nonexistent/fleet.toml"])
            .expect_err("missing file");
        assert!(missing.to_string().contains("/nonexistent/fleet.toml"));
        assert!(matches!(
            parse_with("window = ", &[]),
            Err(Error::Syntax { .. })
        ));
    }
}
