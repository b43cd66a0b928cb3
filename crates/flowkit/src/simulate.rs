//! `flowkit simulate`: toy flow runs as a flowkit user would run them.

use std::time::Duration;

use flowkit::{Block, BlockKind, ErrorKind, Flow, FlowKit, Params, Task, TaskError, TaskRunner};
use telemetry::{EnvSnapshot, Interface, RunOutcome};

#[derive(Debug, clap::Args)]
pub(crate) struct SimulateArgs {
    /// How many flow runs
    #[arg(long, default_value_t = 1)]
    runs: u32,
    /// The flow's name (the user's data: never collected)
    #[arg(long, default_value = "etl")]
    flow_name: String,
    /// A parameter as key=value, repeatable (the user's data: never collected)
    #[arg(long = "param", value_name = "KEY=VALUE")]
    params: Vec<String>,
    /// The chance, from 0 to 1, that a task attempt fails
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    fail_rate: f64,
    /// How long each task sleeps, in milliseconds (no sleeping by default)
    #[arg(long, default_value_t = 0)]
    task_millis: u64,
    /// Seed for the failure draws, for repeatable runs
    #[arg(long)]
    seed: Option<u64>,
    /// Run tasks concurrently instead of one after another
    #[arg(long)]
    concurrent: bool,
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if (0.0..=1.0).contains(&rate) => Ok(rate),
        _ => Err(format!(
            "`{text}` is not a probability: use a number from 0 to 1, such as 0.2"
        )),
    }
}

/// A small, seedable random number generator (xorshift64*): failure draws need no more.
struct Draws(u64);

impl Draws {
    fn new(seed: u64) -> Draws {
        Draws(seed.max(1))
    }

    fn next_fraction(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

pub(crate) fn run(
    args: &SimulateArgs,
    env: &EnvSnapshot,
    stop: &std::sync::atomic::AtomicBool,
) -> anyhow::Result<i32> {
    let config =
        flowkit::telemetry_config(flowkit::default_home(env), Interface::Cli)?.env(env.clone());
    // Asks once, and only a person at a terminal who has not decided yet.
    config.prompt_if_needed();
    let kit = FlowKit::start(&config);
    kit.command_used(flowkit::instrumentation::commands::SIMULATE);

    let mut params = Params::new();
    for param in &args.params {
        match param.split_once('=') {
            Some((key, value)) if !key.is_empty() => {
                params.insert(key.to_owned(), value.to_owned());
            }
            _ => {
                kit.invalid_parameter();
                anyhow::bail!(
                    "--param {param:?} is not valid: expected KEY=VALUE, such as --param region=eu"
                );
            }
        }
    }

    kit.register_block(Block {
        name: "warehouse".to_owned(),
        kind: BlockKind::DatabaseCredentials,
        value: "postgres://simulated".to_owned(),
    });
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |elapsed| elapsed.as_nanos() as u64)
    });
    let draws = std::sync::Mutex::new(Draws::new(seed));
    let flow = simulated_flow(args, draws);

    let mut completed = 0;
    let mut failed = 0;
    let mut ran = 0;
    for _ in 0..args.runs {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        match kit.run(&flow, &params).outcome {
            RunOutcome::Completed => completed += 1,
            _ => failed += 1,
        }
        ran += 1;
    }
    if ran < args.runs {
        println!(
            "Stopped after {ran} of {} flow runs of {:?} (a signal asked to stop): {completed} completed, {failed} failed.",
            args.runs, args.flow_name
        );
        // 130: ended by a signal, after an orderly shutdown.
        return Ok(130);
    }
    println!(
        "Ran {} flow runs of {:?}: {completed} completed, {failed} failed.",
        args.runs, args.flow_name
    );
    Ok(0)
}

/// extract (retried, cached) → transform (asynchronous, with a timeout) → load (uses a block).
fn simulated_flow(args: &SimulateArgs, draws: std::sync::Mutex<Draws>) -> Flow {
    let draws = std::sync::Arc::new(draws);
    let fail_rate = args.fail_rate;
    let pause = Duration::from_millis(args.task_millis);
    let flow_name = args.flow_name.clone();
    let step = move |kind: ErrorKind| {
        let draws = std::sync::Arc::clone(&draws);
        let flow_name = flow_name.clone();
        move |context: &flowkit::TaskContext<'_>| {
            if !pause.is_zero() {
                std::thread::sleep(pause);
            }
            let roll = draws.lock().map_or(1.0, |mut draws| draws.next_fraction());
            if roll < fail_rate {
                // The message carries the user's data, as real error messages do.
                return Err(TaskError::new(
                    kind.clone(),
                    format!(
                        "flow {flow_name:?} failed with parameters {:?}",
                        context.params
                    ),
                ));
            }
            Ok(serde_json::json!({ "rows": 42, "attempt": context.attempt }))
        }
    };
    let runner = if args.concurrent {
        TaskRunner::Concurrent { max_workers: 3 }
    } else {
        TaskRunner::Sequential
    };
    Flow::new(args.flow_name.clone())
        .runner(runner)
        .uses_block("warehouse")
        .task(
            Task::new("extract", step(ErrorKind::Connection))
                .retries(1, Duration::ZERO)
                .cached(),
        )
        .task(
            Task::new("transform", step(ErrorKind::Value))
                .asynchronous()
                .timeout(Duration::from_secs(60)),
        )
        .task(Task::new(
            "load",
            step(ErrorKind::Custom("WarehouseLoadError".to_owned())),
        ))
}
