//! Work the UI waits for without blocking. Model code is async (its GPU read-backs are awaited);
//! natively a task runs to completion at once, in the browser it runs on the page's event loop
//! and the frame that finds it done shows the result.

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;

/// The result of a spawned task, once it is there.
pub struct Pending<T> {
    slot: Rc<RefCell<Option<T>>>,
}

impl<T> Pending<T> {
    /// The result, when the task has finished (only once).
    pub fn take(&self) -> Option<T> {
        self.slot.borrow_mut().take()
    }
}

/// Runs `future`: natively to completion before returning, in the browser in the background,
/// asking `ctx` for a repaint when it is done.
pub fn spawn<T: 'static>(
    future: impl Future<Output = T> + 'static,
    ctx: &egui::Context,
) -> Pending<T> {
    let slot = Rc::new(RefCell::new(None));
    #[cfg(not(target_arch = "wasm32"))]
    {
        *slot.borrow_mut() = Some(crate::model::block_on(future));
        ctx.request_repaint();
    }
    #[cfg(target_arch = "wasm32")]
    {
        let out = slot.clone();
        let ctx = ctx.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let value = future.await;
            *out.borrow_mut() = Some(value);
            ctx.request_repaint();
        });
    }
    Pending { slot }
}

/// Waits `ms` milliseconds without blocking the page (a thread sleep natively, where training
/// has its own thread).
pub async fn sleep(ms: u32) {
    #[cfg(not(target_arch = "wasm32"))]
    std::thread::sleep(std::time::Duration::from_millis(u64::from(ms)));
    #[cfg(target_arch = "wasm32")]
    {
        let promise = js_sys::Promise::new(&mut |resolve, _| {
            if let Some(window) = web_sys::window() {
                let _ = window
                    .set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms as i32);
            }
        });
        let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
    }
}
