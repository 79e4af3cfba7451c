//! Live training off the UI's path: drives the library's `RewardTrainer::step` and
//! `GoalRankTrainer::step_async` and reports every step over a channel. Natively it runs in its
//! own thread; in the browser it is a task on the page's event loop that yields between steps,
//! so the page stays responsive.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use super::task::sleep;
use crate::data::{Dataset, Split};
use crate::eval::{Metrics, generator_rankings_async, score_rankings};
use crate::model::{Generator, GeneratorConfig, RewardModel, RewardModelConfig};
use crate::train::{
    GoalRankConfig, GoalRankTrainer, RewardTrainer, RewardTrainingConfig, StepRecord,
};

/// The knobs of a live GoalRank run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LiveSettings {
    pub steps: usize,
    /// Requests per step.
    pub batch_size: usize,
    pub group_size: usize,
    pub tau: f32,
    pub w_ref: f32,
    pub d_model: usize,
    pub learning_rate: f64,
    /// Validate on (up to 512) validation requests and refresh the app's weights this often.
    pub eval_every: usize,
}

impl LiveSettings {
    /// Sets `w_ref` and the group size to experiment main's values for `dataset`'s kind of data
    /// (simulated or logged: the pull that suits one is too strong or too weak for the other),
    /// each unless it has been changed from either default.
    pub fn follow_data(&mut self, dataset: &crate::data::Dataset) {
        let main = crate::experiment::MainExperimentConfig::new();
        let simulated = dataset.world.is_some();
        follow(&mut self.w_ref, main.w_ref, main.logged_w_ref, simulated);
        follow(
            &mut self.group_size,
            main.group_size,
            main.logged_group_size,
            simulated,
        );
    }
}

/// Sets `value` to the default for simulated or logged data, unless the user moved it off both.
fn follow<T: PartialEq + Copy>(value: &mut T, simulated: T, logged: T, is_simulated: bool) {
    if *value == simulated || *value == logged {
        *value = if is_simulated { simulated } else { logged };
    }
}

impl Default for LiveSettings {
    /// Experiment main's GoalRank settings (one source of defaults), with a short schedule; its
    /// simulated-data w_ref until data is opened (`follow_data`).
    fn default() -> Self {
        let main = crate::experiment::MainExperimentConfig::new();
        Self {
            steps: 300,
            batch_size: crate::train::GoalRankConfig::new().batch_size,
            group_size: main.group_size,
            tau: main.tau,
            w_ref: main.w_ref,
            d_model: main.d_model,
            learning_rate: main.learning_rate,
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
    /// The current generator (on the job's device), to refresh the app's lists.
    Generator {
        config: GeneratorConfig,
        model: Box<Generator>,
    },
    /// A reward model the worker trained because none was loaded.
    Reward {
        config: RewardModelConfig,
        model: Box<RewardModel>,
    },
    /// The run ended: stopped, finished, or failed with a message.
    Finished(Result<(), String>),
}

#[derive(Default)]
struct Control {
    paused: AtomicBool,
    stop: AtomicBool,
    finished: AtomicBool,
}

/// A running (or finished) live training job.
pub struct TrainJob {
    control: Arc<Control>,
    events: Receiver<TrainEvent>,
    #[cfg(not(target_arch = "wasm32"))]
    handle: Option<std::thread::JoinHandle<()>>,
}

impl TrainJob {
    /// Starts training on `device` (natively in a new thread, in the browser as a task).
    /// `reward` is the frozen reward model on `device`; without one the worker first trains one
    /// for an epoch.
    pub fn start(
        dataset: Arc<Dataset>,
        reward: Option<RewardModel>,
        settings: LiveSettings,
        device: Device,
    ) -> Self {
        let control = Arc::new(Control::default());
        let (sender, events) = channel();
        let worker_control = control.clone();
        let job = async move {
            let result = run(
                &dataset,
                reward,
                &settings,
                &device,
                &worker_control,
                &sender,
            )
            .await
            .map_err(|e| e.to_string());
            let _ = sender.send(TrainEvent::Finished(result));
            worker_control.finished.store(true, Ordering::Relaxed);
        };
        #[cfg(not(target_arch = "wasm32"))]
        let handle = Some(std::thread::spawn(move || {
            crate::model::on_thread_pool(move || crate::model::block_on(job))
        }));
        #[cfg(target_arch = "wasm32")]
        wasm_bindgen_futures::spawn_local(job);
        Self {
            control,
            events,
            #[cfg(not(target_arch = "wasm32"))]
            handle,
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

    /// True once the job has ended.
    pub fn is_finished(&self) -> bool {
        self.control.finished.load(Ordering::Relaxed)
    }
}

impl Drop for TrainJob {
    fn drop(&mut self) {
        self.stop();
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// Waits while paused; true when the job should stop. Also gives the page a turn between
/// steps (in the browser the job shares the UI's thread).
async fn should_stop(control: &Control) -> bool {
    #[cfg(target_arch = "wasm32")]
    sleep(0).await;
    while control.paused.load(Ordering::Relaxed) && !control.stop.load(Ordering::Relaxed) {
        sleep(30).await;
    }
    control.stop.load(Ordering::Relaxed)
}

async fn run(
    dataset: &Dataset,
    reward: Option<RewardModel>,
    settings: &LiveSettings,
    device: &Device,
    control: &Control,
    send: &Sender<TrainEvent>,
) -> crate::Result<()> {
    let say = |msg: String| {
        let _ = send.send(TrainEvent::Status(msg));
    };
    // Settings are checked before any work starts (the same checks as the command line).
    let config = GoalRankConfig::new()
        .with_batch_size(settings.batch_size)
        .with_group_size(settings.group_size)
        .with_tau(settings.tau)
        .with_w_ref(settings.w_ref)
        .with_d_model(settings.d_model)
        .with_learning_rate(settings.learning_rate);
    config.validate()?;
    config.check_size(dataset)?;
    let reward: RewardModel = match reward {
        Some(model) => model,
        None => {
            let config = RewardTrainingConfig::new().with_d_model(settings.d_model);
            let mut trainer = RewardTrainer::new(dataset, Split::Train, &config, device);
            let steps = trainer.steps_per_epoch();
            for i in 0..steps {
                if should_stop(control).await {
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
                model: Box::new(model.clone()),
            });
            model
        }
    };
    let model_config = config.model(dataset);
    let mut trainer = GoalRankTrainer::new(dataset, reward, config, device);
    let valid = &dataset.valid[..dataset.valid.len().min(512)];
    say("GoalRank: training".into());
    while trainer.steps_done() < settings.steps {
        if should_stop(control).await {
            break;
        }
        let record = trainer.step_async().await?;
        let step = record.step;
        let _ = send.send(TrainEvent::Step(record));
        if step.is_multiple_of(settings.eval_every.max(1)) || step == settings.steps {
            let model = trainer.model();
            let rankings = generator_rankings_async(&model, dataset, valid, 256, device).await?;
            let metrics = score_rankings(valid, &rankings, dataset.config.list_len)?;
            let _ = send.send(TrainEvent::Valid { step, metrics });
            let _ = send.send(TrainEvent::Generator {
                config: model_config.clone(),
                model: Box::new(model),
            });
        }
    }
    say(format!(
        "GoalRank: stopped after {} steps",
        trainer.steps_done()
    ));
    Ok(())
}
