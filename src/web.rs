//! The browser demo's entry (wasm only): picks the device (WebGPU through Burn's wgpu backend,
//! or the CPU where the browser has no WebGPU), starts the app on the page's canvas, and exposes
//! `window.goalrank` for the browser test:
//!
//! - `goalrank.state()`: the app's state as a JSON string ([`crate::app::hook::published_state`]);
//! - `goalrank.command(text)`: queues a command for the next frame ([`crate::app::hook::push_command`]).

use burn::tensor::Device;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;

use crate::app::warmup::Warmup;
use crate::app::{GoalRankApp, hook};

/// The canvas and loading-text ids in `index.html`.
const CANVAS_ID: &str = "goalrank_canvas";
const LOADING_ID: &str = "loading_text";

/// Starts the demo (called by the binary's `main` on wasm).
pub fn start() {
    eframe::WebLogger::init(log::LevelFilter::Info).ok();
    install_hook();
    configure_kernels();
    wasm_bindgen_futures::spawn_local(async {
        let result = run(pick_device().await).await;
        let document = web_sys::window().and_then(|w| w.document());
        if let Some(loading) = document.and_then(|d| d.get_element_by_id(LOADING_ID)) {
            match result {
                Ok(()) => loading.remove(),
                Err(e) => loading.set_inner_html(&format!(
                    "<p>The app failed to start: {e}</p><p>See the console for details.</p>"
                )),
            }
        }
    });
}

/// CubeCL's autotune level, set before the first device from `?autotune=minimal|extensive`
/// (default: balanced). Minimal tunes fewer kernels: the first training step on SwiftShader
/// took 59 s instead of 98 s.
fn configure_kernels() {
    use cubecl_runtime::config::autotune::AutotuneLevel;
    use cubecl_runtime::config::{CubeClRuntimeConfig, RuntimeConfig};
    let level = match query_value("autotune").as_deref() {
        Some("minimal") => AutotuneLevel::Minimal,
        Some("extensive") => AutotuneLevel::Extensive,
        _ => AutotuneLevel::Balanced,
    };
    let mut config = CubeClRuntimeConfig::default();
    config.autotune.level = level;
    CubeClRuntimeConfig::try_set(config);
}

/// The device the page runs on, in words, whether it is WebGPU, and whether that is a software
/// adapter.
struct Picked {
    device: Device,
    backend: String,
    webgpu: bool,
    software: bool,
}

/// WebGPU when the browser offers it, else the CPU backend, with the reason in words.
async fn pick_device() -> Picked {
    let cpu = |reason: String| Picked {
        device: Device::flex(),
        backend: format!("CPU (flex, wasm): {reason}"),
        webgpu: false,
        software: false,
    };
    let has_webgpu = web_sys::window()
        .map(|w| w.navigator())
        .and_then(|n| js_sys::Reflect::get(&n, &JsValue::from_str("gpu")).ok())
        .is_some_and(|gpu| !gpu.is_undefined() && !gpu.is_null());
    if !has_webgpu {
        return cpu("this browser has no WebGPU".into());
    }
    let adapter = match check_adapter().await {
        Ok(adapter) if adapter.subgroups => adapter,
        Ok(_) => {
            return cpu(
                "this browser's WebGPU adapter lacks the \"subgroups\" feature Burn's \
                 kernels need"
                    .into(),
            );
        }
        Err(e) => return cpu(e),
    };
    match Device::wgpu_options().init_async().await {
        Ok(device) => Picked {
            device,
            backend: "WebGPU (Burn wgpu)".into(),
            webgpu: true,
            software: adapter.software,
        },
        Err(e) => cpu(format!("WebGPU did not start ({e:?})")),
    }
}

/// What the page needs to know of the browser's default WebGPU adapter.
struct AdapterCheck {
    /// It has the "subgroups" feature (`index.html` then requests it for Burn's device).
    subgroups: bool,
    /// It is a software fallback (`info.isFallbackAdapter`, e.g. SwiftShader).
    software: bool,
}

/// Asks `navigator.gpu.requestAdapter()` for the default adapter and checks it.
async fn check_adapter() -> Result<AdapterCheck, String> {
    let get = |target: &JsValue, key: &str| {
        js_sys::Reflect::get(target, &JsValue::from_str(key))
            .map_err(|_| format!("WebGPU: no `{key}`"))
    };
    let navigator = web_sys::window().ok_or("no window")?.navigator();
    let gpu = get(&navigator, "gpu")?;
    let request = get(&gpu, "requestAdapter")?
        .dyn_into::<js_sys::Function>()
        .map_err(|_| "WebGPU: requestAdapter is not a function")?;
    let promise = request
        .call0(&gpu)
        .map_err(|e| format!("WebGPU: requestAdapter failed: {e:?}"))?
        .dyn_into::<js_sys::Promise>()
        .map_err(|_| "WebGPU: requestAdapter did not return a promise")?;
    let adapter = wasm_bindgen_futures::JsFuture::from(promise)
        .await
        .map_err(|e| format!("WebGPU: requestAdapter failed: {e:?}"))?;
    if adapter.is_null() || adapter.is_undefined() {
        return Err("WebGPU is there but offers no adapter".into());
    }
    let features = get(&adapter, "features")?;
    let has = get(&features, "has")?
        .dyn_into::<js_sys::Function>()
        .map_err(|_| "WebGPU: features.has is not a function")?
        .call1(&features, &JsValue::from_str("subgroups"))
        .map_err(|e| format!("WebGPU: features.has failed: {e:?}"))?;
    // `info` is missing in older browsers: then the adapter is taken as hardware.
    let software = get(&adapter, "info")
        .and_then(|info| get(&info, "isFallbackAdapter"))
        .is_ok_and(|v| v.as_bool() == Some(true));
    Ok(AdapterCheck {
        subgroups: has.as_bool().unwrap_or(false),
        software,
    })
}

async fn run(picked: Picked) -> Result<(), String> {
    let Picked {
        device,
        backend,
        webgpu,
        software,
    } = picked;
    let canvas = web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| d.get_element_by_id(CANVAS_ID))
        .ok_or_else(|| format!("no element #{CANVAS_ID} in the page"))?
        .dyn_into::<web_sys::HtmlCanvasElement>()
        .map_err(|_| format!("#{CANVAS_ID} is not a canvas"))?;
    eframe::WebRunner::new()
        .start(
            canvas,
            eframe::WebOptions::default(),
            Box::new(move |cc| {
                cc.egui_ctx.set_fonts(page_fonts());
                // Live training runs where the models rank, unless the address asks for the CPU
                // (`?train=cpu`): on a software WebGPU adapter (SwiftShader) a step is about
                // 200 times slower than on the CPU backend in the same page.
                let train_on_cpu = webgpu && query_value("train").as_deref() == Some("cpu");
                // On WebGPU the page first ranks on the CPU and moves to WebGPU once ranking's
                // kernels are compiled (`app::warmup`), unless the address says `?warmup=off`.
                let mut app = if webgpu && query_value("warmup").as_deref() != Some("off") {
                    let mut app =
                        GoalRankApp::demo(Device::flex(), "CPU (flex, wasm)".into(), train_on_cpu);
                    app.warmup = Some(Warmup::new(device, backend));
                    app
                } else {
                    GoalRankApp::demo(device, backend, train_on_cpu)
                };
                if software && !train_on_cpu {
                    app.device_note = Some(
                        "This browser's WebGPU adapter is a software fallback: training steps \
                         are slow here. Add ?train=cpu to the address to train on the CPU \
                         backend instead (the models still rank on WebGPU)."
                            .into(),
                    );
                }
                Ok(Box::new(app))
            }),
        )
        .await
        .map_err(|e| format!("{e:?}"))
}

/// The page's fonts: egui's default proportional font (Ubuntu Light) for all text, and its
/// icon font. egui's defaults also bundle Hack for monospace text, which the app does not ask
/// for (egui's debug panels and egui_plot's coordinate and heat-map labels use it, none of which
/// the app shows): leaving it out takes Hack (0.15 MB gzipped) out of the download.
fn page_fonts() -> egui::FontDefinitions {
    use egui::{FontData, FontFamily, FontTweak};
    use std::sync::Arc;
    let mut fonts = egui::FontDefinitions::empty();
    fonts.font_data.insert(
        "Ubuntu-Light".into(),
        Arc::new(FontData::from_static(epaint_default_fonts::UBUNTU_LIGHT)),
    );
    // As egui's defaults scale it.
    let icons = FontData::from_static(epaint_default_fonts::EGUI_ICONS).tweak(FontTweak {
        scale: 0.90,
        ..Default::default()
    });
    fonts.font_data.insert("egui-icons".into(), Arc::new(icons));
    for family in [FontFamily::Proportional, FontFamily::Monospace] {
        fonts
            .families
            .insert(family, vec!["Ubuntu-Light".into(), "egui-icons".into()]);
    }
    fonts
}

/// The value of `key` in the page address's query string (`?key=value&...`).
fn query_value(key: &str) -> Option<String> {
    let search = web_sys::window()?.location().search().ok()?;
    search
        .trim_start_matches('?')
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.to_string())
}

/// `window.goalrank = { state, command }`.
fn install_hook() {
    let Some(window) = web_sys::window() else {
        return;
    };
    let state = Closure::<dyn Fn() -> String>::new(hook::published_state);
    let command = Closure::<dyn Fn(String)>::new(hook::push_command);
    let object = js_sys::Object::new();
    let _ = js_sys::Reflect::set(&object, &"state".into(), state.as_ref());
    let _ = js_sys::Reflect::set(&object, &"command".into(), command.as_ref());
    let _ = js_sys::Reflect::set(&window, &"goalrank".into(), &object);
    // The page keeps the hook for its whole life.
    state.forget();
    command.forget();
}
