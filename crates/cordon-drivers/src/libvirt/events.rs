//! libvirt domain events through `virt-sys` (the `virt` crate's safe API has none).
//!
//! libvirt delivers events only to clients that run an event loop: once per process the
//! default implementation is registered (`virEventRegisterDefaultImpl`, before the first
//! connection is opened) and a thread runs `virEventRunDefaultImpl` forever. A
//! [`Subscription`] registers a REBOOT and a LIFECYCLE callback for one domain; the
//! callbacks (run on the event-loop thread) only push the event into a shared queue and wake
//! the waiting thread. Dropping the subscription deregisters both callbacks; libvirt then
//! calls the free callback, which releases the queue's reference (also when the connection
//! closes first), so nothing leaks.

use std::collections::VecDeque;
use std::os::raw::{c_int, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use tracing::debug;
use virt::connect::Connect;
use virt::domain::Domain;
use virt::error::Error as VirtError;
use virt_sys as sys;

/// A domain event as delivered by libvirt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DomainEvent {
    /// `VIR_DOMAIN_EVENT_ID_REBOOT`: the guest was reset (QEMU's `RESET`, e.g. after a guest
    /// reboot, an ACPI reboot or `virDomainReset`).
    Reboot,
    /// `VIR_DOMAIN_EVENT_ID_LIFECYCLE` with its `virDomainEventType` and detail.
    Lifecycle { event: i32, detail: i32 },
}

impl DomainEvent {
    /// "reboot event", "lifecycle event: started (booted)".
    pub(crate) fn describe(&self) -> String {
        match *self {
            DomainEvent::Reboot => "reboot event".to_string(),
            DomainEvent::Lifecycle { event, detail } => {
                format!("lifecycle event: {}", lifecycle_text(event, detail))
            }
        }
    }

    pub(crate) fn is_lifecycle(&self, wanted: u32) -> bool {
        matches!(*self, DomainEvent::Lifecycle { event, .. } if u32::try_from(event) == Ok(wanted))
    }
}

fn lifecycle_text(event: i32, detail: i32) -> String {
    let Ok(event) = u32::try_from(event) else { return format!("event {event}, detail {detail}") };
    let detail = u32::try_from(detail).unwrap_or(u32::MAX);
    let (name, detail_name) = match event {
        sys::VIR_DOMAIN_EVENT_DEFINED => ("defined", None),
        sys::VIR_DOMAIN_EVENT_UNDEFINED => ("undefined", None),
        sys::VIR_DOMAIN_EVENT_STARTED => (
            "started",
            match detail {
                sys::VIR_DOMAIN_EVENT_STARTED_BOOTED => Some("booted"),
                sys::VIR_DOMAIN_EVENT_STARTED_MIGRATED => Some("migrated"),
                sys::VIR_DOMAIN_EVENT_STARTED_RESTORED => Some("restored"),
                sys::VIR_DOMAIN_EVENT_STARTED_FROM_SNAPSHOT => Some("from snapshot"),
                sys::VIR_DOMAIN_EVENT_STARTED_WAKEUP => Some("wakeup"),
                _ => None,
            },
        ),
        sys::VIR_DOMAIN_EVENT_SUSPENDED => ("suspended", None),
        sys::VIR_DOMAIN_EVENT_RESUMED => ("resumed", None),
        sys::VIR_DOMAIN_EVENT_STOPPED => (
            "stopped",
            match detail {
                sys::VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN => Some("shutdown"),
                sys::VIR_DOMAIN_EVENT_STOPPED_DESTROYED => Some("destroyed"),
                sys::VIR_DOMAIN_EVENT_STOPPED_CRASHED => Some("crashed"),
                sys::VIR_DOMAIN_EVENT_STOPPED_FAILED => Some("failed"),
                _ => None,
            },
        ),
        sys::VIR_DOMAIN_EVENT_SHUTDOWN => ("shutdown", None),
        sys::VIR_DOMAIN_EVENT_PMSUSPENDED => ("pm-suspended", None),
        sys::VIR_DOMAIN_EVENT_CRASHED => ("crashed", None),
        _ => return format!("event {event}, detail {detail}"),
    };
    match detail_name {
        Some(detail_name) => format!("{name} ({detail_name})"),
        None => format!("{name} (detail {detail})"),
    }
}

/// The process-wide event loop: `Ok` once registered and its thread runs.
static EVENT_LOOP: OnceLock<Result<(), String>> = OnceLock::new();

/// Registers libvirt's default event loop implementation and starts the thread that runs it,
/// once per process. Must precede the first `virConnectOpen` whose connection should deliver
/// events (and keepalives). Also silences libvirt's default error handler, which prints every
/// error on stderr: errors reach the caller as `Result`s.
pub(crate) fn ensure_event_loop() -> Result<(), String> {
    EVENT_LOOP
        .get_or_init(|| {
            virt::error::clear_error_callback();
            // SAFETY: no preconditions; guarded by the OnceLock so it runs once per process,
            // before this driver opens any connection.
            let rc = unsafe { sys::virEventRegisterDefaultImpl() };
            if rc < 0 {
                return Err(format!("virEventRegisterDefaultImpl failed: {}", VirtError::last_error()));
            }
            std::thread::Builder::new()
                .name("cordon-libvirt-events".to_string())
                .spawn(|| {
                    loop {
                        // SAFETY: the default implementation was registered above; running
                        // it from one dedicated thread is the documented usage.
                        let rc = unsafe { sys::virEventRunDefaultImpl() };
                        if rc < 0 {
                            // Should not happen; do not spin if it does.
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                })
                .map_err(|error| format!("cannot start the libvirt event thread: {error}"))?;
            debug!("libvirt: event loop started");
            Ok(())
        })
        .clone()
}

/// References to event queues currently held by libvirt (one per registered callback); back
/// to zero once every deregistered callback was freed. Logged, to make leaks visible.
static HELD_BY_LIBVIRT: AtomicUsize = AtomicUsize::new(0);

/// Events received for one subscription, in order, with when they arrived.
#[derive(Debug, Default)]
struct Queue {
    events: Mutex<VecDeque<(Instant, DomainEvent)>>,
    arrived: Condvar,
}

impl Queue {
    fn push(&self, event: DomainEvent) {
        let mut events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        events.push_back((Instant::now(), event));
        self.arrived.notify_all();
    }
}

/// REBOOT and LIFECYCLE callbacks registered for one domain; deregistered on drop.
#[derive(Debug)]
pub(crate) struct Subscription {
    connection: Connect,
    callback_ids: Vec<c_int>,
    queue: Arc<Queue>,
}

impl Subscription {
    /// Registers the callbacks for `domain` on `connection` (which must have been opened after
    /// [`ensure_event_loop`]).
    pub(crate) fn new(connection: &Connect, domain: &Domain) -> Result<Subscription, VirtError> {
        let mut subscription = Subscription {
            connection: connection.clone(),
            callback_ids: Vec::new(),
            queue: Arc::new(Queue::default()),
        };
        // SAFETY: the lifecycle callback has the signature libvirt calls for
        // VIR_DOMAIN_EVENT_ID_LIFECYCLE (virConnectDomainEventCallback); the registration API
        // takes the generic type, and C code casts it the same way (VIR_DOMAIN_EVENT_CALLBACK).
        // Both are `extern "C"` function pointers of the same size.
        let lifecycle: sys::virConnectDomainEventGenericCallback = Some(unsafe {
            std::mem::transmute::<
                unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, c_int, c_int, *mut c_void) -> c_int,
                unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, *mut c_void),
            >(on_lifecycle)
        });
        let reboot: sys::virConnectDomainEventGenericCallback = Some(on_reboot);
        for (event_id, callback) in
            [(sys::VIR_DOMAIN_EVENT_ID_REBOOT, reboot), (sys::VIR_DOMAIN_EVENT_ID_LIFECYCLE, lifecycle)]
        {
            let opaque = Arc::into_raw(Arc::clone(&subscription.queue)).cast_mut().cast::<c_void>();
            HELD_BY_LIBVIRT.fetch_add(1, Ordering::SeqCst);
            let event_id = c_int::try_from(event_id).unwrap_or(c_int::MAX);
            // SAFETY: both pointers are live wrappers' pointers (the Connect and Domain are
            // borrowed for the call); `opaque` is an owned Arc reference that libvirt hands to
            // the callbacks and releases through `free_queue` once the callback is
            // deregistered or the connection closes.
            let id = unsafe {
                sys::virConnectDomainEventRegisterAny(
                    connection.as_ptr(),
                    domain.as_ptr(),
                    event_id,
                    callback,
                    opaque,
                    Some(free_queue),
                )
            };
            if id < 0 {
                let error = VirtError::last_error();
                // SAFETY: registration failed, so libvirt did not take the reference (it never
                // calls the free callback on failure): give it back. Earlier registrations are
                // undone by dropping `subscription`.
                unsafe { free_queue(opaque) };
                return Err(error);
            }
            subscription.callback_ids.push(id);
        }
        Ok(subscription)
    }

    /// Waits until `until` for the next event not yet taken; `None` on timeout or when
    /// `interrupt_every` elapses (so the caller can check its connection), whichever is first.
    pub(crate) fn next(&self, until: Instant, interrupt_every: Duration) -> Option<(Instant, DomainEvent)> {
        let stop = until.min(Instant::now() + interrupt_every);
        let mut events = self.queue.events.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(event) = events.pop_front() {
                return Some(event);
            }
            let now = Instant::now();
            if now >= stop {
                return None;
            }
            events = self.queue.arrived.wait_timeout(events, stop - now).unwrap_or_else(PoisonError::into_inner).0;
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        for id in self.callback_ids.drain(..) {
            // SAFETY: `id` was returned by virConnectDomainEventRegisterAny on this connection
            // and is deregistered once. Failure (a closed connection) is harmless: closing the
            // connection releases its callbacks, calling `free_queue` for each.
            let rc = unsafe { sys::virConnectDomainEventDeregisterAny(self.connection.as_ptr(), id) };
            if rc < 0 {
                debug!(callback_id = id, error = %VirtError::last_error(), "libvirt: event deregistration failed");
            }
        }
        debug!(
            held_by_libvirt = HELD_BY_LIBVIRT.load(Ordering::SeqCst),
            "libvirt: event callbacks deregistered (references libvirt has not released yet)"
        );
    }
}

/// # Safety
/// `opaque` must be a pointer from `Arc::<Queue>::into_raw` that libvirt still holds.
unsafe fn queue_of<'a>(opaque: *mut c_void) -> &'a Queue {
    // SAFETY: per the function's contract the Arc reference is alive until `free_queue`.
    unsafe { &*opaque.cast_const().cast::<Queue>() }
}

unsafe extern "C" fn on_reboot(_conn: sys::virConnectPtr, _dom: sys::virDomainPtr, opaque: *mut c_void) {
    // SAFETY: libvirt passes back the opaque pointer given at registration, alive until
    // `free_queue` runs, which is never concurrently with a callback.
    unsafe { queue_of(opaque) }.push(DomainEvent::Reboot);
}

unsafe extern "C" fn on_lifecycle(
    _conn: sys::virConnectPtr,
    _dom: sys::virDomainPtr,
    event: c_int,
    detail: c_int,
    opaque: *mut c_void,
) -> c_int {
    // SAFETY: as in `on_reboot`.
    unsafe { queue_of(opaque) }.push(DomainEvent::Lifecycle { event, detail });
    0
}

unsafe extern "C" fn free_queue(opaque: *mut c_void) {
    // SAFETY: `opaque` came from `Arc::into_raw` and libvirt calls this exactly once per
    // successful registration (or we do, once, after a failed one).
    drop(unsafe { Arc::from_raw(opaque.cast_const().cast::<Queue>()) });
    HELD_BY_LIBVIRT.fetch_sub(1, Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_texts() {
        assert_eq!(DomainEvent::Reboot.describe(), "reboot event");
        let started = DomainEvent::Lifecycle {
            event: sys::VIR_DOMAIN_EVENT_STARTED as i32,
            detail: sys::VIR_DOMAIN_EVENT_STARTED_BOOTED as i32,
        };
        assert_eq!(started.describe(), "lifecycle event: started (booted)");
        assert!(started.is_lifecycle(sys::VIR_DOMAIN_EVENT_STARTED));
        assert!(!DomainEvent::Reboot.is_lifecycle(sys::VIR_DOMAIN_EVENT_STARTED));
        assert_eq!(DomainEvent::Lifecycle { event: 99, detail: 1 }.describe(), "lifecycle event: event 99, detail 1");
        assert_eq!(
            DomainEvent::Lifecycle { event: sys::VIR_DOMAIN_EVENT_SHUTDOWN as i32, detail: 1 }.describe(),
            "lifecycle event: shutdown (detail 1)"
        );
    }

    #[test]
    fn a_queue_wakes_its_waiter() {
        let queue = Arc::new(Queue::default());
        let pusher = Arc::clone(&queue);
        let started = Instant::now();
        let handle = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            pusher.push(DomainEvent::Reboot);
        });
        let mut events = queue.events.lock().unwrap_or_else(PoisonError::into_inner);
        while events.is_empty() {
            events = queue.arrived.wait_timeout(events, Duration::from_secs(5)).unwrap().0;
            assert!(started.elapsed() < Duration::from_secs(5));
        }
        assert_eq!(events.pop_front().map(|(_, event)| event), Some(DomainEvent::Reboot));
        drop(events);
        handle.join().unwrap();
    }
}
