//! A small scripting surface over the app, for the browser test (`web/test.mjs`, through
//! `window.goalrank`) and native tests: text commands in, a JSON snapshot out.

use std::cell::RefCell;
use std::collections::VecDeque;

use serde_json::{Value, json};

use super::{GoalRankApp, Tab, lists, train};

/// Commands queued by the page between frames, and the state the last frame published.
struct Mailbox {
    commands: VecDeque<String>,
    state: String,
    ctx: Option<egui::Context>,
}

thread_local! {
    static MAILBOX: RefCell<Mailbox> = RefCell::new(Mailbox {
        commands: VecDeque::new(),
        state: r#"{"ready":false}"#.into(),
        ctx: None,
    });
}

/// Queues `text` for the next frame and asks for that frame (`goalrank.command(text)`).
pub fn push_command(text: String) {
    MAILBOX.with(|m| {
        let mut mailbox = m.borrow_mut();
        mailbox.commands.push_back(text);
        if let Some(ctx) = &mailbox.ctx {
            ctx.request_repaint();
        }
    });
}

/// The state the last frame published, as a JSON string (`goalrank.state()`).
pub fn published_state() -> String {
    MAILBOX.with(|m| m.borrow().state.clone())
}

/// Called at the start of every frame (in the browser): runs the commands queued since the last
/// one.
#[cfg(target_arch = "wasm32")]
pub(crate) fn run_commands(app: &mut GoalRankApp, ctx: &egui::Context) {
    let commands: Vec<String> = MAILBOX.with(|m| {
        let mut mailbox = m.borrow_mut();
        mailbox.ctx.get_or_insert_with(|| ctx.clone());
        mailbox.commands.drain(..).collect()
    });
    for command in commands {
        if let Err(e) = app.command(&command, ctx) {
            app.message = e;
        }
    }
}

/// Called at the end of every frame: publishes what the frame showed. Every change (a finished
/// task, a training event, a command) brings a frame, so the state is never stale for long.
#[cfg(target_arch = "wasm32")]
pub(crate) fn publish(app: &GoalRankApp) {
    let state = app.state().to_string();
    MAILBOX.with(|m| m.borrow_mut().state = state);
}

impl GoalRankApp {
    /// Runs one command: `next` (the next request), `train <steps> [batch=<n>] [group=<K>]` (a
    /// live GoalRank run of that many steps with the current settings, the given requests per
    /// step and group size, validating at its end) or `stop`.
    pub fn command(&mut self, command: &str, ctx: &egui::Context) -> Result<(), String> {
        let words: Vec<&str> = command.split_whitespace().collect();
        match words.as_slice() {
            ["next"] => {
                let count = self.requests().len();
                if self.request + 1 < count {
                    self.request += 1;
                }
            }
            ["train", steps, options @ ..] => {
                let steps: usize = steps
                    .parse()
                    .map_err(|_| format!("train: `{steps}` is not a step count"))?;
                // Checked in full before anything changes.
                let mut live = self.settings.live.clone();
                for option in options {
                    let (key, value) = option
                        .split_once('=')
                        .and_then(|(k, v)| Some((k, v.parse::<usize>().ok()?)))
                        .filter(|(_, v)| *v > 0)
                        .ok_or_else(|| {
                            format!("train: `{option}` is not batch=<n> or group=<n> (n > 0)")
                        })?;
                    match key {
                        "batch" => live.batch_size = value,
                        "group" if value >= 2 => live.group_size = value,
                        "group" => return Err(format!("train: `{option}`: a group needs K ≥ 2")),
                        _ => {
                            return Err(format!(
                                "train: unknown option `{option}` (batch=<n>, group=<n>)"
                            ));
                        }
                    }
                }
                live.steps = steps.max(1);
                live.eval_every = steps.max(1);
                self.settings.live = live;
                self.tab = Tab::Train;
                train::start(self);
            }
            ["stop"] => {
                if let Some(job) = &self.job {
                    job.stop();
                }
            }
            _ => return Err(format!("unknown command `{command}`")),
        }
        lists::ensure_view(self, ctx);
        Ok(())
    }

    /// What the app shows, as JSON: backend, the shown request with GoalRank's list, and the
    /// live run's losses.
    pub fn state(&self) -> Value {
        let request = self.requests().get(self.request).map(|r| {
            let list = self.view.as_ref().and_then(|v| {
                v.lists
                    .iter()
                    .find(|l| l.name == lists::GOALRANK_LIST)
                    .map(|l| l.items.clone())
            });
            json!({
                "index": self.request,
                "candidates": r.candidates,
                "goalrank_list": list,
            })
        });
        let running = self.job.is_some() && !self.history.finished;
        json!({
            "ready": self.dataset.is_some() && self.models.generator.is_some(),
            "backend": self.backend,
            "message": self.message,
            "device_note": self.device_note,
            // Each fused WGSL kernel's launches so far (`shaders/`; WebGPU only).
            "kernel_launches": crate::model::kernel_launches(),
            "warmup": {
                "preparing": self.warmup.is_some(),
                "first_list_s": self.warmup_times.first_list_s,
                "switched_s": self.warmup_times.switched_s,
            },
            "list_len": self.dataset.as_ref().map(|d| d.config.list_len),
            "request": request,
            "training": {
                "backend": if self.train_on_cpu { "CPU (flex)" } else { self.backend.as_str() },
                "started": self.job.is_some(),
                "running": running,
                "status": self.history.status,
                "losses": self.history.steps.iter().map(|r| r.loss).collect::<Vec<_>>(),
                "seconds": self.history.steps.iter().map(|r| r.seconds).collect::<Vec<_>>(),
                "valid_ndcg": self.history.valid.last().map(|(_, m)| m.ndcg),
            },
        })
    }
}
