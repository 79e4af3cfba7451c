//! Live training in a background thread: drives the library's `RewardTrainer::step` and
//! `GoalRankTrainer::step` and reports every step over a channel, so the UI never blocks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;
use std::time::Duration;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::data::{Dataset, Split};
use crate::eval::{Metrics, generator_rankings, score_rankings};
use crate::model::{GeneratorConfig, RewardModel, RewardModelConfig};
use crate::train::checkpoint::{module_bytes, module_from_bytes};
use crate::train::{
    GoalRankConfig, GoalRankTrainer, RewardTrainer, RewardTrainingConfig, StepRecord,
};

/// The knobs of a live GoalRank run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LiveSettings {
    pub steps: usize,
    pub group_size: usize,
    pub tau: f32,
    pub w_ref: f32,
    pub d_model: usize,
    pub learning_rate: f64,
    /// Validate on (up to 512) validation requests and refresh the app's weights this often.
    pub eval_every: usize,
}

impl Default for LiveSettings {
    fn default() -> Self {
        Self {
            steps: 300,
            group_size: 20,
            tau: 1.0,
            w_ref: 0.2,
            d_model: 64,
            learning_rate: 1e-3,
            eval_every: 25,
        }
    }
}

/// What the worker reports.
#[derive(Debug)]
pub enum TrainEvent {
    Status(String),
    /// One GoalRank step.
    Step(StepRecord),
    /// Validation metrics after `step`.
    Valid {
        step: usize,
        metrics: Metrics,
    },
    /// The current generator's weights (burnpack), to refresh the app's lists.
    Generator {
        config: GeneratorConfig,
        bytes: Vec<u8>,
    },
    /// A reward model the worker trained because none was loaded.
    Reward {
        config: RewardModelConfig,
        bytes: Vec<u8>,
    },
    /// The run ended: stopped, finished, or failed with a message.
    Finished(Result<(), String>),
}

#[derive(Default)]
struct Control {
    paused: AtomicBool,
    stop: AtomicBool,
}

/// A running (or finished) live training job.
pub struct TrainJob {
    control: Arc<Control>,
    events: Receiver<TrainEvent>,
    handle: Option<JoinHandle<()>>,
}

impl TrainJob {
    /// Starts training on `device` in a new thread. `reward` is the frozen reward model as
    /// (config, burnpack bytes); without one the worker first trains one for an epoch.
    pub fn start(
        dataset: Arc<Dataset>,
        reward: Option<(RewardModelConfig, Vec<u8>)>,
        settings: LiveSettings,
        device: Device,
    ) -> Self {
        let control = Arc::new(Control::default());
        let (sender, events) = channel();
        let worker_control = control.clone();
        let handle = std::thread::spawn(move || {
            let result = run(
                &dataset,
                reward,
                &settings,
                &device,
                &worker_control,
                &sender,
            )
            .map_err(|e| e.to_string());
            let _ = sender.send(TrainEvent::Finished(result));
        });
        Self {
            control,
            events,
            handle: Some(handle),
        }
    }

    pub fn set_paused(&self, paused: bool) {
        self.control.paused.store(paused, Ordering::Relaxed);
    }

    pub fn is_paused(&self) -> bool {
        self.control.paused.load(Ordering::Relaxed)
    }

    /// Asks the worker to stop after the current step.
    pub fn stop(&self) {
        self.control.stop.store(true, Ordering::Relaxed);
        self.control.paused.store(false, Ordering::Relaxed);
    }

    /// Events since the last call.
    pub fn poll(&self) -> Vec<TrainEvent> {
        self.events.try_iter().collect()
    }

    /// True once the thread has ended.
    pub fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(JoinHandle::is_finished)
    }
}

impl Drop for TrainJob {
    fn drop(&mut self) {
        self.stop();
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// Waits while paused; true when the job should stop.
fn should_stop(control: &Control) -> bool {
    while control.paused.load(Ordering::Relaxed) && !control.stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(30));
    }
    control.stop.load(Ordering::Relaxed)
}

fn run(
    dataset: &Dataset,
    reward: Option<(RewardModelConfig, Vec<u8>)>,
    settings: &LiveSettings,
    device: &Device,
    control: &Control,
    send: &Sender<TrainEvent>,
) -> crate::Result<()> {
    let say = |msg: String| {
        let _ = send.send(TrainEvent::Status(msg));
    };
    let reward: RewardModel = match reward {
        Some((config, bytes)) => module_from_bytes(config.init(device), bytes)?,
        None => {
            let config = RewardTrainingConfig::new().with_d_model(settings.d_model);
            let mut trainer = RewardTrainer::new(dataset, Split::Train, &config, device);
            let steps = trainer.steps_per_epoch();
            for i in 0..steps {
                if should_stop(control) {
                    return Ok(());
                }
                let record = trainer.step();
                say(format!(
                    "reward model: step {}/{steps}, loss {:.4}",
                    i + 1,
                    record.loss
                ));
            }
            let model = trainer.model();
            let _ = send.send(TrainEvent::Reward {
                config: config.model(dataset),
                bytes: module_bytes(&model)?,
            });
            model
        }
    };
    let config = GoalRankConfig::new()
        .with_group_size(settings.group_size)
        .with_tau(settings.tau)
        .with_w_ref(settings.w_ref)
        .with_d_model(settings.d_model)
        .with_learning_rate(settings.learning_rate);
    let model_config = config.model(dataset);
    let mut trainer = GoalRankTrainer::new(dataset, reward, config, device);
    let valid = &dataset.valid[..dataset.valid.len().min(512)];
    say("GoalRank: training".into());
    while trainer.steps_done() < settings.steps {
        if should_stop(control) {
            break;
        }
        let record = trainer.step();
        let step = record.step;
        let _ = send.send(TrainEvent::Step(record));
        if step.is_multiple_of(settings.eval_every.max(1)) || step == settings.steps {
            let model = trainer.model();
            let rankings = generator_rankings(&model, dataset, valid, 256, device)?;
            let metrics = score_rankings(valid, &rankings, dataset.config.list_len);
            let _ = send.send(TrainEvent::Valid { step, metrics });
            let _ = send.send(TrainEvent::Generator {
                config: model_config.clone(),
                bytes: module_bytes(&model)?,
            });
        }
    }
    say(format!(
        "GoalRank: stopped after {} steps",
        trainer.steps_done()
    ));
    Ok(())
}
