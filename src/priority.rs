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
//! At a school's real load these threads keep up with ease.

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
    // SAFETY: as in yield_to_dns.
    let tid = unsafe { libc::gettid() };
    let param = libc::sched_param { sched_priority: 0 };
    if unsafe { libc::sched_setscheduler(tid, libc::SCHED_OTHER, &param) } == 0 {
        unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19) };
    }
}

/// Puts the calling thread in the `SCHED_IDLE` class (nice 19 where that is
/// refused). Best effort: failure only means normal priority.
pub fn yield_to_dns() {
    // SAFETY: gettid, sched_setscheduler and setpriority have no
    // memory-safety preconditions; `param` outlives the call. On Linux a
    // thread id names that thread alone.
    let tid = unsafe { libc::gettid() };
    let param = libc::sched_param { sched_priority: 0 };
    if unsafe { libc::sched_setscheduler(tid, libc::SCHED_IDLE, &param) } == 0 {
        return;
    }
    let result = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19) };
    if result != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "cannot lower a background thread's priority");
    }
}
