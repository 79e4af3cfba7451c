//! What goalrank promises when things go wrong: bad settings are refused before any file is
//! written, a NaN stops training instead of being served, a checkpoint is one unit, a resumed
//! run continues bit for bit, a killed run loses nothing, and output errors end cleanly.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use goalrank::data::{Dataset, RequestConfig, Split, simulator};
use goalrank::model::GeneratorConfig;
use goalrank::run::{FitOptions, fit_goalrank, run_config};
use goalrank::train::{GoalRankConfig, GoalRankTrainer, Reward};

use crate::common::{goalrank, stderr};

/// Asserts exit code 2, no panic and exactly one `error:` line, which names `place`.
fn assert_refused(out: &Output, place: &str) {
    let text = stderr(out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(!text.contains("panicked"), "{text}");
    let errors: Vec<&str> = text.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "{text}");
    assert!(errors[0].contains(place), "expected `{place}` in: {text}");
}

/// `train goalrank` on the tiny simulator against its exact utility: no reward model needed.
fn oracle_run(run: &Path, artifacts: &Path, steps: usize, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "train",
        "goalrank",
        "--data",
        "sim:tiny",
        "--reward",
        "oracle",
        "--eval-every",
        "2",
        "--d-model",
        "16",
        "--layers",
        "1",
        "--heads",
        "2",
        "--batch-size",
        "8",
        "--group-size",
        "4",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(["--steps".into(), steps.to_string()]);
    args.extend(["--run".into(), run.display().to_string()]);
    args.extend(["--artifacts".into(), artifacts.display().to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn run_oracle(run: &Path, artifacts: &Path, steps: usize, extra: &[&str]) -> Output {
    let args = oracle_run(run, artifacts, steps, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    goalrank(&args)
}

/// The train records of `metrics.jsonl`; every line must parse.
fn train_records(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .expect("metrics.jsonl")
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|e| panic!("torn line {line:?}: {e}"))
        })
        .filter(|v| v["kind"] == "train")
        .map(|v| v["record"].clone())
        .collect()
}

/// The train records' steps in `metrics.jsonl`.
fn logged_steps(run: &Path) -> Vec<u64> {
    train_records(run)
        .iter()
        .map(|r| r["step"].as_u64().expect("step"))
        .collect()
}

/// The current checkpoint folder of a run.
fn checkpoint_dir(run: &Path) -> PathBuf {
    let name = std::fs::read_to_string(run.join("checkpoint")).expect("checkpoint pointer");
    run.join(name)
}

/// The tiny simulated world as the command line builds it.
fn tiny_world() -> Dataset {
    let defaults = RequestConfig::new();
    let config = simulator::SimConfig::preset("tiny")
        .expect("preset")
        .with_history_len(defaults.history_len)
        .with_seed(defaults.seed);
    simulator::build(&config).expect("simulate")
}

/// Every weight of the generator saved in `weights` (of `run`), in module order. (The files
/// themselves differ between processes: they record random parameter ids.)
fn weight_values(run: &Path, weights: &Path) -> Vec<f32> {
    struct Values(Vec<f32>);
    impl ModuleVisitor for Values {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let data = param.val().into_data();
            self.0
                .extend(data.try_to_vec::<f32>().expect("f32 weights"));
        }
    }
    let dataset = tiny_world();
    let config = run_config(run, "goalrank", &dataset).expect("config.json");
    let config: GeneratorConfig = serde_json::from_value(config["model"].clone()).expect("model");
    let device = burn::tensor::Device::flex();
    let model = goalrank::model::load_module(config.init(&device), weights).expect("weights");
    let mut values = Values(Vec::new());
    model.visit(&mut values);
    assert!(!values.0.is_empty());
    values.0
}

/// Names in `run` that an interrupted write would leave behind.
fn leftovers(run: &Path) -> Vec<String> {
    std::fs::read_dir(run)
        .expect("run folder")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect()
}

#[test]
fn bad_settings_are_refused_before_any_file_is_written() {
    let root = tempfile::tempdir().expect("tempdir");
    let cases: &[(&[&str], &str)] = &[
        (&["--group-size", "0"], "--group-size"),
        (&["--heads", "0"], "--heads"),
        (&["--d-model", "0"], "--d-model"),
        (&["--heads", "3"], "--heads"),
        (&["--decoder-mlp", "0"], "--decoder-mlp"),
        (&["--tau", "0"], "--tau"),
        (&["--tau", "inf"], "--tau"),
        (&["--tau", "-1"], "--tau"),
        (&["--lr", "NaN"], "--lr"),
        (&["--lr=-1"], "--lr"),
        (&["--w-sup", "inf"], "--w-sup"),
        (&["--w-ref", "NaN"], "--w-ref"),
        (&["--w-ref", "0", "--w-sup", "0"], "--w-ref"),
        (&["--steps", "0"], "--steps"),
        (&["--eval-every", "0"], "--eval-every"),
        (&["--batch-size", "0"], "--batch-size"),
        (&["--model-seed", "-1"], "--model-seed"),
        (&["--group-temperature", "0"], "--group-temperature"),
        (&["--group-temperature", "NaN"], "--group-temperature"),
        // Numbers f32 or f64 cannot hold are refused as written, not as `inf` or 0.
        (
            &["--tau", "1e300"],
            "'--tau <TAU>': 1e300 is outside the range",
        ),
        (
            &["--tau", "1e-50"],
            "'--tau <TAU>': 1e-50 is outside the range",
        ),
        (
            &["--lr", "1e400"],
            "'--lr <LR>': 1e400 is outside the range",
        ),
        (
            &["--w-sup", "one"],
            "'--w-sup <W_SUP>': one is not a number",
        ),
        (&["--devices", "remote:"], "--devices"),
        (&["--devices", "remote:http://host:1"], "--devices"),
        (&["--devices", "flex,,flex"], "--devices"),
        // More copies than the batch's 8 requests.
        (
            &["--devices", "flex,flex,flex,flex,flex,flex,flex,flex,flex"],
            "--devices = 9",
        ),
    ];
    for (i, (flags, place)) in cases.iter().enumerate() {
        let run = root.path().join(format!("run{i}"));
        let out = run_oracle(&run, root.path(), 4, flags);
        assert_refused(&out, place);
        let written: Vec<_> = std::fs::read_dir(&run)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(written.is_empty(), "{flags:?} wrote {written:?}");
    }
    // Sizes no machine can hold are refused by name, not left to abort on allocation.
    for (flag, value) in [
        ("--batch-size", "100000000"),
        // Within the step's bound, above the decoder MLP's hidden layer's: still the batch.
        ("--batch-size", "2000000"),
        ("--group-size", "100000000"),
        ("--d-model", "1000000"),
    ] {
        let run = root.path().join(format!("huge{flag}"));
        let mut args = oracle_run(&run, root.path(), 4, &[]);
        let at = args.iter().position(|a| a == flag).expect("flag") + 1;
        args[at] = value.into();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_refused(&goalrank(&args), &format!("{flag} = {value}: too large"));
    }
    let run = root.path().join("huge-decoder");
    let out = run_oracle(&run, root.path(), 4, &["--decoder-mlp", "100000000"]);
    assert_refused(&out, "--decoder-mlp = 100000000: too large");
    let art = root.path().to_str().expect("path");
    let out = goalrank(&[
        "eval",
        "--data",
        "sim:tiny",
        "--artifacts",
        art,
        "--pick-with",
        art,
        "--pick-k",
        "0",
    ]);
    assert_refused(&out, "--pick-k");
    let out = goalrank(&[
        "experiment",
        "main",
        "--data",
        "sim:tiny",
        "--artifacts",
        art,
        "--results",
        art,
        "--seeds",
        "0",
    ]);
    assert_refused(&out, "--seeds");
}

#[test]
fn a_non_finite_loss_stops_training_before_the_update() {
    let dataset =
        simulator::build(&simulator::SimConfig::preset("tiny").expect("preset")).expect("simulate");
    let device = burn::tensor::Device::flex();
    // τ = 0 cannot pass `validate`; the trainer is built directly to reach the NaN path.
    let config = GoalRankConfig::new()
        .with_d_model(16)
        .with_heads(2)
        .with_batch_size(8)
        .with_group_size(4)
        .with_tau(0.0);
    assert!(config.validate().is_err());
    let reward = Reward::oracle(&dataset).expect("oracle");
    let mut trainer = GoalRankTrainer::new(&dataset, reward, config, &device);
    let before = goalrank::model::module_bytes(&trainer.model()).expect("bytes");
    let err = trainer.step().expect_err("a NaN loss is an error");
    assert!(matches!(err, goalrank::Error::NonFinite(_)), "{err}");
    assert!(err.to_string().contains("step 1"), "{err}");
    assert_eq!(trainer.steps_done(), 0);
    let after = goalrank::model::module_bytes(&trainer.model()).expect("bytes");
    assert!(before == after, "the weights changed");
}

#[test]
fn an_empty_split_is_an_error_naming_it() {
    let mut dataset =
        simulator::build(&simulator::SimConfig::preset("tiny").expect("preset")).expect("simulate");
    dataset.valid.clear();
    let run = tempfile::tempdir().expect("tempdir");
    let mut options = FitOptions::new(run.path().join("run"), burn::tensor::Device::flex());
    options.steps = 2;
    options.eval_every = 1;
    options.progress = false;
    let reward = Reward::oracle(&dataset).expect("oracle");
    let config = GoalRankConfig::new().with_d_model(16).with_heads(2);
    let err = fit_goalrank(&dataset, reward, &config, &options).expect_err("empty split");
    assert!(
        err.to_string().contains("valid split has no requests"),
        "{err}"
    );
    assert!(!run.path().join("run").join("config.json").exists());
    assert!(dataset.require(Split::Train).is_ok());
}

#[test]
fn resume_cuts_the_log_back_removes_leftovers_and_continues_bit_for_bit() {
    let root = tempfile::tempdir().expect("tempdir");
    let whole = root.path().join("whole");
    let broken = root.path().join("broken");
    let out = run_oracle(&whole, root.path(), 8, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run_oracle(&broken, root.path(), 4, &[]);
    assert!(out.status.success(), "{}", stderr(&out));

    // What a crash after step 4 can leave: records past the checkpoint, a torn last line,
    // a temporary file and an unfinished checkpoint folder.
    let log = broken.join("metrics.jsonl");
    let mut text = std::fs::read_to_string(&log).expect("log");
    text.push_str("{\"kind\":\"train\",\"record\":{\"step\":5,\"loss\":1.0}}\n{\"kind\":\"tr");
    std::fs::write(&log, text).expect("write");
    std::fs::write(broken.join("model.tmp4242"), b"half").expect("write");
    std::fs::create_dir_all(broken.join("checkpoint-00000006.tmp")).expect("mkdir");

    let out = run_oracle(&broken, root.path(), 8, &["--resume"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(logged_steps(&broken), (1..=8).collect::<Vec<_>>());
    assert!(leftovers(&broken).is_empty(), "{:?}", leftovers(&broken));
    let losses = |run: &Path| -> Vec<String> {
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .expect("log")
            .lines()
            .filter(|l| l.contains("\"kind\":\"train\""))
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("json");
                v["record"]["loss"].to_string()
            })
            .collect()
    };
    assert_eq!(losses(&whole), losses(&broken));
    for file in [checkpoint_dir(&whole), whole.clone()] {
        let other = broken.join(file.strip_prefix(&whole).expect("inside"));
        assert!(
            weight_values(&whole, &file.join("model.bpk"))
                == weight_values(&broken, &other.join("model.bpk")),
            "{} differs from the uninterrupted run's",
            file.display()
        );
    }
}

#[test]
fn a_checkpoint_whose_parts_do_not_belong_together_is_refused() {
    let root = tempfile::tempdir().expect("tempdir");
    let run = root.path().join("run");
    let out = run_oracle(&run, root.path(), 4, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let optimizer = checkpoint_dir(&run).join("optimizer.bin");
    let mut bytes = std::fs::read(&optimizer).expect("optimizer");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    std::fs::write(&optimizer, bytes).expect("write");
    let out = run_oracle(&run, root.path(), 6, &["--resume"]);
    assert_refused(&out, "do not match its state.json");
}

#[test]
fn corrupt_or_non_finite_weights_are_refused_with_one_line() {
    let root = tempfile::tempdir().expect("tempdir");
    let run = root.path().join("run");
    let out = run_oracle(&run, root.path(), 2, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let art = root.path().to_str().expect("path");
    let run_s = run.to_str().expect("path");
    let eval = || {
        goalrank(&[
            "eval",
            "--data",
            "sim:tiny",
            "--artifacts",
            art,
            "--checkpoint",
            run_s,
        ])
    };
    let out = eval();
    assert!(out.status.success(), "{}", stderr(&out));

    let weights = run.join("model.bpk");
    let good = std::fs::read(&weights).expect("weights");
    // NaN in the last weights (burnpack keeps tensor data at the end of the file).
    let mut nan = good.clone();
    let n = nan.len();
    nan[n - 64..].fill(0xff);
    for (bytes, place) in [
        (Vec::new(), "model.bpk: not a goalrank weights file"),
        (good[..good.len() / 2].to_vec(), "model.bpk: "),
        (nan, "NaN or infinite"),
    ] {
        std::fs::write(&weights, &bytes).expect("write");
        let out = eval();
        assert_refused(&out, place);
        let text = stderr(&out);
        assert!(text.len() < 400, "one short line: {text}");
    }
}

#[test]
fn a_closed_pipe_ends_quietly_and_a_full_disk_is_one_error() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_goalrank"))
        .args(["data", "--data", "sim:tiny"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));

    if let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") {
        let out = Command::new(env!("CARGO_BIN_EXE_goalrank"))
            .args(["data", "--data", "sim:tiny"])
            .stdout(full)
            .output()
            .expect("run");
        let text = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(!text.contains("panicked"), "{text}");
        assert!(text.contains("error: writing to standard output"), "{text}");
    }
}

/// Kills a training process at random moments, resumes it each time, and checks that the run
/// ends as the uninterrupted one: a parseable log with steps 1..n, no leftovers, equal weights.
#[test]
fn a_run_killed_twenty_times_ends_as_the_uninterrupted_run() {
    const STEPS: usize = 300;
    const KILLS: usize = 20;
    let root = tempfile::tempdir().expect("tempdir");
    let whole = root.path().join("whole");
    let killed = root.path().join("killed");
    let out = run_oracle(&whole, root.path(), STEPS, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let args = oracle_run(&killed, root.path(), STEPS, &["--resume"]);

    // Kill delays from a small deterministic generator (no extra dependency): each process
    // lives 15-95 ms, enough to start and do a few steps (about 4 ms each, a checkpoint every
    // 2), so the kills land in steps, validations and checkpoint writes alike.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut kills = 0;
    while kills < KILLS {
        let mut child = Command::new(env!("CARGO_BIN_EXE_goalrank"))
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        std::thread::sleep(Duration::from_millis(15 + state % 80));
        if child.try_wait().expect("poll").is_some() {
            panic!("the run finished after {kills} kills; make it longer");
        }
        child.kill().expect("kill");
        child.wait().expect("reap");
        kills += 1;
    }
    let out = goalrank(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        logged_steps(&killed),
        (1..=STEPS as u64).collect::<Vec<_>>()
    );
    assert!(leftovers(&killed).is_empty(), "{:?}", leftovers(&killed));
    assert!(
        weight_values(&whole, &checkpoint_dir(&whole).join("model.bpk"))
            == weight_values(&killed, &checkpoint_dir(&killed).join("model.bpk")),
        "final weights differ from the uninterrupted run's"
    );
}

#[test]
fn a_cache_with_indices_outside_the_catalogue_is_rebuilt_not_used() {
    use goalrank::data::{Origin, load_or_build};
    let artifacts = tempfile::tempdir().expect("tempdir");
    let data = crate::common::fixture("ml-latest-tiny");
    let config = crate::common::small_config();
    let (_, origin, path) = load_or_build(&data, &config, artifacts.path(), false).expect("build");
    assert!(matches!(origin, Origin::Built));
    let mut cache: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("cache")).expect("json");
    cache["train"][0]["history"] = serde_json::json!([99_999]);
    std::fs::write(&path, serde_json::to_vec(&cache).expect("json")).expect("write");
    let (dataset, origin, _) =
        load_or_build(&data, &config, artifacts.path(), false).expect("rebuild");
    assert!(matches!(origin, Origin::Built), "a damaged cache was used");
    assert!(dataset.check().is_ok());
}

/// The train losses of `run`'s `metrics.jsonl`, by step.
fn train_losses(run: &Path) -> Vec<f64> {
    train_records(run)
        .iter()
        .map(|r| r["loss"].as_f64().expect("loss"))
        .collect()
}

/// Trains `name` under `root` on the tiny simulator's exact utility; the run must succeed.
fn train_in(root: &Path, name: &str, steps: usize, extra: &[&str]) -> PathBuf {
    let run = root.join(name);
    let out = run_oracle(&run, root, steps, extra);
    assert!(out.status.success(), "{name}: {}", stderr(&out));
    run
}

/// The weights of a run's current checkpoint.
fn last_weights(run: &Path) -> Vec<f32> {
    weight_values(run, &checkpoint_dir(run).join("model.bpk"))
}

/// Two runs' losses agree to 1e-5 (relative) and their last weights to 1e-5: a few Adam steps
/// of lr 1e-4 move a weight by up to about 6e-4, and runs that sum the same terms in another
/// order agree to far below that.
fn assert_same_training(a: &Path, b: &Path, what: &str) {
    let (la, lb) = (train_losses(a), train_losses(b));
    assert_eq!(la.len(), lb.len(), "{what}");
    for (x, y) in la.iter().zip(&lb) {
        assert!(
            (x - y).abs() <= 1e-5 * x.abs().max(1.0),
            "{what}: loss {x} vs {y}"
        );
    }
    assert_same_weights(a, b, what);
}

fn assert_same_weights(a: &Path, b: &Path, what: &str) {
    let (wa, wb) = (last_weights(a), last_weights(b));
    assert_eq!(wa.len(), wb.len(), "{what}");
    let worst = wa
        .iter()
        .zip(&wb)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-5, "{what}: weights differ by up to {worst}");
}

#[test]
fn data_parallel_training_equals_one_device_and_its_checkpoints_move_between_them() {
    let root = tempfile::tempdir().expect("tempdir");
    let train =
        |name: &str, steps: usize, extra: &[&str]| train_in(root.path(), name, steps, extra);
    let one = train("one", 6, &[]);
    // Batch 8 in two shares of 4, and in three of 3, 3 and 2.
    for devices in ["flex,flex", "flex,flex,flex"] {
        let many = train(devices, 6, &["--devices", devices]);
        assert_eq!(train_losses(&many).len(), 6);
        assert_same_training(&one, &many, devices);
    }
    // A two-device run resumes on one device, and a one-device run on two.
    let longer = train("one-longer", 8, &[]);
    let moved = train("flex,flex", 8, &["--resume"]);
    assert_same_weights(&longer, &moved, "two devices, then one");
    let moved = train("one", 8, &["--resume", "--devices", "flex,flex"]);
    assert_same_weights(&longer, &moved, "one device, then two");
}

/// On one CPU device a step learns from the log π its group's decoding recorded; a
/// data-parallel step teacher-forces the group instead. The two routes train alike without the
/// logged list in the group (the recorded lists are then the whole group) and with the policy
/// gradient (the advantages weigh the recorded lists column by column).
#[test]
fn recorded_and_teacher_forced_groups_train_alike_in_every_group_layout() {
    let root = tempfile::tempdir().expect("tempdir");
    let train =
        |name: &str, steps: usize, extra: &[&str]| train_in(root.path(), name, steps, extra);
    for (name, extra) in [
        ("no-logged", &["--no-logged"][..]),
        ("policy-gradient", &["--objective", "policy-gradient"][..]),
    ] {
        let one = train(name, 4, extra);
        let two = train(
            &format!("{name}-two"),
            4,
            &[extra, &["--devices", "flex,flex"]].concat(),
        );
        assert_same_training(&one, &two, name);
    }
}

/// A `goalrank serve` process on a free local port, killed when dropped.
struct Server {
    child: std::process::Child,
    url: String,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_goalrank"))
            .args(["serve", "--port", "0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn serve");
        let mut first = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut first)
            .expect("read the server's first line");
        // "serving flex (CPU) on ws://127.0.0.1:PORT (Ctrl+C stops); ..."
        let url = first
            .split_whitespace()
            .find(|w| w.starts_with("ws://"))
            .unwrap_or_else(|| panic!("no address in {first:?}"))
            .to_string();
        Server { child, url }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Training on a device another process serves (`goalrank serve`, `--devices
/// remote:ws://...`) gives the local run's losses and weights, alone or beside a local device,
/// and its checkpoint resumes locally; a server with a token refuses a client without it.
#[test]
fn a_run_on_a_served_device_equals_the_local_run() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&[]);
    let remote = format!("remote:{}", server.url);
    let train =
        |name: &str, steps: usize, extra: &[&str]| train_in(root.path(), name, steps, extra);
    let local = train("local", 4, &[]);
    for (name, devices) in [
        ("remote", remote.clone()),
        ("flex-and-remote", format!("flex,{remote}")),
    ] {
        let run = train(name, 4, &["--devices", &devices]);
        assert_eq!(train_losses(&run).len(), 4, "{name}");
        assert_same_training(&local, &run, name);
    }
    // The served run's checkpoint continues on the local CPU as the local run does.
    let longer = train("local", 6, &["--resume"]);
    let moved = train("remote", 6, &["--resume"]);
    assert_same_weights(&longer, &moved, "resumed locally");

    // Bad server settings: one line naming the flag, exit 2, before anything is served.
    for (flags, place) in [
        (&["--token", ""][..], "--token"),
        (&["--bind", "no-such-host.invalid"][..], "--bind"),
        (&["--device", "remote:ws://127.0.0.1:1"][..], "--device"),
        (&["--port", "70000"][..], "--port"),
    ] {
        let out = goalrank(&[&["serve", "--port", "0"][..], flags].concat());
        assert_refused(&out, place);
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("serving"),
            "{flags:?}"
        );
    }

    // A server that checks a token: a client without it gets one line naming the device.
    let guarded = Server::start(&["--token", "s3cret-token"]);
    let out = run_oracle(
        &root.path().join("refused"),
        root.path(),
        2,
        &["--devices", &format!("remote:{}", guarded.url)],
    );
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(!text.contains("panicked"), "{text}");
    assert!(text.contains("remote device"), "{text}");
}

/// `--resume` never starts a run afresh over a folder that holds another kind of run (a
/// finished reward model has no GoalRank checkpoint), nor continues a run against another
/// reward than the one it was trained on; a model trained on other data is not loaded.
#[test]
fn resume_refuses_another_kind_of_run_and_another_reward() {
    let root = tempfile::tempdir().expect("tempdir");
    let art = root.path().to_str().expect("path");
    let reward = root.path().join("reward");
    let out = goalrank(&[
        "train",
        "reward",
        "--data",
        "sim:tiny",
        "--artifacts",
        art,
        "--epochs",
        "1",
        "--d-model",
        "16",
        "--run",
        reward.to_str().expect("path"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let files = |dir: &Path| -> Vec<(String, Vec<u8>)> {
        let mut all: Vec<_> = std::fs::read_dir(dir)
            .expect("dir")
            .flatten()
            .filter(|e| e.path().is_file())
            .map(|e| {
                let bytes = std::fs::read(e.path()).expect("read");
                (e.file_name().to_string_lossy().to_string(), bytes)
            })
            .collect();
        all.sort();
        all
    };
    let before = files(&reward);
    let reward_s = reward.to_str().expect("path");
    let out = run_oracle(&reward, root.path(), 2, &["--resume"]);
    assert_refused(&out, "holds a reward run");
    assert!(files(&reward) == before, "the reward run was changed");

    // A GoalRank run against the exact utility, resumed against the reward model.
    let run = root.path().join("goalrank");
    let out = run_oracle(&run, root.path(), 2, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut args = oracle_run(&run, root.path(), 4, &["--resume"]);
    let at = args.iter().position(|a| a == "oracle").expect("reward");
    args[at] = reward_s.into();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_refused(&goalrank(&args), "reward = ");

    // A model trained on other data (another catalogue) is refused by name, not loaded into
    // layers of the wrong shape.
    let movielens = crate::common::fixture("ml-latest-tiny");
    let out = goalrank(&[
        "eval",
        "--data",
        movielens.to_str().expect("path"),
        "--candidates",
        "10",
        "--list-len",
        "4",
        "--artifacts",
        art,
        "--reward",
        reward_s,
    ]);
    assert_refused(&out, "trained on data with");
}
