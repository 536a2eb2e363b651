//! DNS answers first: the threads doing everything else (the query-log
//! writer, retention, the dashboard and metrics listeners) run in Linux's
//! `SCHED_IDLE` class, so they take only CPU the resolver leaves.
//!
//! When the machine is saturated, the writer then gets little CPU, its
//! channel fills and rows are dropped and counted, rather than the log taking
//! half a core from the resolver; dashboard pages slow down rather than DNS.
//! And a waking DNS thread preempts an idle-class thread at once, where a
//! nice-19 one may keep the CPU for its time slice: measured on the bed at
//! 10k qps with both on one CPU, p99 was 1.0-1.4 ms with a nice-19 writer.
//! At a school's real load these threads keep up with ease. The writer,
//! whose rows must not be lost, steps up to nice 19 while it is behind
//! ([`keep_up`]) and while it seals a slice of the log ([`step_up`]).

/// For a background thread whose work must not be lost (the query-log
/// writer): `true` while it is falling behind moves it out of the idle class
/// to nice 19, `false` puts it back. At nice 19 it still yields to DNS (a
/// nice-0 thread weighs 68 times as much) but is no longer starved by the
/// other idle-class threads (a dashboard page, retention, a list compile).
/// Measured on the loopback bed in the soak at half the peak: with the writer
/// always idle-class, the dashboard's pages and reloads under way starved it
/// for seconds at a time and 2% of the rows were dropped. Best effort.
pub fn keep_up(behind: bool) {
    if !behind {
        yield_to_dns();
        return;
    }
    // SAFETY: as in yield_to_dns. The thread is at nice 19 already (see
    // there); leaving the idle class needs RLIMIT_NICE of at least 1 (nice
    // 19) or CAP_SYS_NICE: the systemd unit and the compose file set it.
    let tid = unsafe { libc::gettid() };
    let param = libc::sched_param { sched_priority: 0 };
    if unsafe { libc::sched_setscheduler(tid, libc::SCHED_OTHER, &param) } != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "cannot move the query-log writer to nice 19 (LimitNICE=1 allows it)");
    }
}

/// A step of work that must not stall behind other idle-class work (the
/// query-log writer sealing a slice of ~100,000 rows): while the guard lives
/// the calling thread is at nice 19 instead of in the idle class, if it was
/// there. Measured in the soak: a slice sealed in the idle class while a list
/// compile (also idle-class) ran took seconds, the writer wrote nothing
/// meanwhile and its channel overflowed.
pub fn step_up() -> SteppedUp {
    // SAFETY: no preconditions; 0 is the calling thread.
    let was_idle = unsafe { libc::sched_getscheduler(0) } == libc::SCHED_IDLE;
    if was_idle {
        keep_up(true);
    }
    SteppedUp { was_idle }
}

/// Puts the thread back in the idle class when dropped (see [`step_up`]).
pub struct SteppedUp {
    was_idle: bool,
}

impl Drop for SteppedUp {
    fn drop(&mut self) {
        if self.was_idle {
            keep_up(false);
        }
    }
}

/// Puts the calling thread in the `SCHED_IDLE` class (nice 19 where that is
/// refused). Best effort: failure only means normal priority.
pub fn yield_to_dns() {
    // SAFETY: gettid, sched_setscheduler and setpriority have no
    // memory-safety preconditions; `param` outlives the call. On Linux a
    // thread id names that thread alone.
    // Nice 19 first: the fallback where the idle class is refused, and the
    // nice value the thread has if it leaves the class again (keep_up).
    let tid = unsafe { libc::gettid() };
    let param = libc::sched_param { sched_priority: 0 };
    let niced = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19) } == 0;
    let idle = unsafe { libc::sched_setscheduler(tid, libc::SCHED_IDLE, &param) } == 0;
    if !niced && !idle {
        tracing::debug!(error = %std::io::Error::last_os_error(), "cannot lower a background thread's priority");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy_and_nice() -> (i32, i32) {
        // SAFETY: no preconditions; 0 is the calling thread.
        unsafe { (libc::sched_getscheduler(0), libc::getpriority(libc::PRIO_PROCESS, 0)) }
    }

    /// The log writer's steps: idle class, nice 19 while behind (allowed by
    /// RLIMIT_NICE 1, as the systemd unit sets), idle class again.
    #[test]
    fn a_writer_behind_leaves_the_idle_class_for_nice_19_and_comes_back() {
        std::thread::spawn(|| {
            // What the unit's LimitNICE=1 gives. Raising the hard limit
            // needs CAP_SYS_RESOURCE, which a container's root may lack; it
            // then has CAP_SYS_NICE, which allows the step as well.
            let limit = libc::rlimit { rlim_cur: 1, rlim_max: 1 };
            // SAFETY: `limit` outlives the call.
            let _ = unsafe { libc::setrlimit(libc::RLIMIT_NICE, &limit) };
            yield_to_dns();
            assert_eq!(policy_and_nice(), (libc::SCHED_IDLE, 19));
            keep_up(true);
            assert_eq!(policy_and_nice(), (libc::SCHED_OTHER, 19));
            keep_up(false);
            assert_eq!(policy_and_nice(), (libc::SCHED_IDLE, 19));
            // A step that must not stall, from the idle class and back.
            let step = step_up();
            assert_eq!(policy_and_nice(), (libc::SCHED_OTHER, 19));
            drop(step);
            assert_eq!(policy_and_nice(), (libc::SCHED_IDLE, 19));
            // From nice 19 (behind), a step leaves it there.
            keep_up(true);
            drop(step_up());
            assert_eq!(policy_and_nice(), (libc::SCHED_OTHER, 19));
        })
        .join()
        .unwrap();
    }
}
