//! A circuit breaker as a state machine, with time passed in (no clock, no I/O): the outbound
//! adapters (the carrier webhook) keep one per target and report to it.
//!
//! Two bugs reported against widely used breakers shape it:
//! - **It counts only the target's failures** (5xx, timeouts, transport errors, as the caller
//!   classifies them). A call it rejected itself is not an outcome at all, so an open breaker
//!   cannot feed on its own rejections; a refusal by a healthy target (a 4xx) is a success.
//! - **Probes are bounded by rate, not by count.** After the cool-down one call at a time goes
//!   through as a probe; a probe whose outcome never comes back (its caller was cancelled) frees
//!   its slot after [`BreakerPolicy::probe_timeout`], so the breaker cannot stay half-open, or
//!   open, long after the target recovered.

use std::time::{Duration, Instant};

/// When a breaker opens and how it tries again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Consecutive failures that open it.
    pub failure_threshold: u32,
    /// How long it stays open before a probe may go through.
    pub cool_down: Duration,
    /// How long a probe may be out before another may go through.
    pub probe_timeout: Duration,
}

/// The state, as `circuit_breaker_state` shows it (0 closed, 1 half-open, 2 open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    HalfOpen,
    Open,
}

impl BreakerState {
    pub fn gauge_value(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        }
    }
}

/// What the breaker says to a call about to go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Closed: go.
    Allowed,
    /// Half-open: go, as the one probe.
    Probe,
    /// Open (or a probe is out): do not call; this is not an outcome to report.
    Rejected,
}

/// How a call that went out ended, as the caller classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// The target answered as a healthy target does (2xx, or a 4xx about the request).
    Healthy,
    /// 5xx, timeout, connection refused or reset.
    Failed,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Closed { consecutive_failures: u32 },
    Open { since: Instant },
    HalfOpen { probe_since: Option<Instant> },
}

/// One target's breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    policy: BreakerPolicy,
    phase: Phase,
}

impl Breaker {
    pub fn new(policy: BreakerPolicy) -> Breaker {
        Breaker {
            policy,
            phase: Phase::Closed {
                consecutive_failures: 0,
            },
        }
    }

    /// The state at `now` (an open breaker whose cool-down has passed is half-open).
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.phase {
            Phase::Closed { .. } => BreakerState::Closed,
            Phase::Open { since } if now < since + self.policy.cool_down => BreakerState::Open,
            Phase::Open { .. } | Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Whether a call may go out at `now`.
    pub fn admit(&mut self, now: Instant) -> Admission {
        match self.phase {
            Phase::Closed { .. } => Admission::Allowed,
            Phase::Open { since } if now < since + self.policy.cool_down => Admission::Rejected,
            Phase::Open { .. } | Phase::HalfOpen { probe_since: None } => {
                self.phase = Phase::HalfOpen {
                    probe_since: Some(now),
                };
                Admission::Probe
            }
            Phase::HalfOpen {
                probe_since: Some(since),
            } if now >= since + self.policy.probe_timeout => {
                // The last probe never reported: its slot is free again.
                self.phase = Phase::HalfOpen {
                    probe_since: Some(now),
                };
                Admission::Probe
            }
            Phase::HalfOpen { .. } => Admission::Rejected,
        }
    }

    /// Reports how an admitted call ended.
    pub fn record(&mut self, now: Instant, outcome: CallOutcome) {
        self.phase = match (self.phase, outcome) {
            (_, CallOutcome::Healthy) => Phase::Closed {
                consecutive_failures: 0,
            },
            (
                Phase::Closed {
                    consecutive_failures,
                },
                CallOutcome::Failed,
            ) => {
                let failures = consecutive_failures.saturating_add(1);
                if failures >= self.policy.failure_threshold.max(1) {
                    Phase::Open { since: now }
                } else {
                    Phase::Closed {
                        consecutive_failures: failures,
                    }
                }
            }
            // A failed probe (or a late failure of a call admitted before the breaker
            // opened): open again, for a whole cool-down from now.
            (Phase::HalfOpen { .. } | Phase::Open { .. }, CallOutcome::Failed) => {
                Phase::Open { since: now }
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: BreakerPolicy = BreakerPolicy {
        failure_threshold: 3,
        cool_down: Duration::from_secs(30),
        probe_timeout: Duration::from_secs(5),
    };

    fn opened(now: Instant) -> Breaker {
        let mut breaker = Breaker::new(POLICY);
        for _ in 0..3 {
            assert_eq!(breaker.admit(now), Admission::Allowed);
            breaker.record(now, CallOutcome::Failed);
        }
        assert_eq!(breaker.state(now), BreakerState::Open);
        breaker
    }

    #[test]
    fn consecutive_failures_open_it_and_a_healthy_answer_resets_the_count() {
        let now = Instant::now();
        let mut breaker = Breaker::new(POLICY);
        breaker.record(now, CallOutcome::Failed);
        breaker.record(now, CallOutcome::Failed);
        breaker.record(now, CallOutcome::Healthy);
        breaker.record(now, CallOutcome::Failed);
        breaker.record(now, CallOutcome::Failed);
        assert_eq!(breaker.state(now), BreakerState::Closed);
        breaker.record(now, CallOutcome::Failed);
        assert_eq!(breaker.state(now), BreakerState::Open);
        assert_eq!(breaker.admit(now), Admission::Rejected);
    }

    #[test]
    fn its_own_rejections_do_not_keep_it_open() {
        let start = Instant::now();
        let mut breaker = opened(start);
        // A flood of calls while open: all rejected, none of them an outcome.
        for second in 0..30 {
            assert_eq!(
                breaker.admit(start + Duration::from_secs(second)),
                Admission::Rejected
            );
        }
        let after = start + POLICY.cool_down;
        assert_eq!(breaker.state(after), BreakerState::HalfOpen);
        assert_eq!(breaker.admit(after), Admission::Probe);
        breaker.record(after, CallOutcome::Healthy);
        assert_eq!(breaker.state(after), BreakerState::Closed);
        assert_eq!(breaker.admit(after), Admission::Allowed);
    }

    #[test]
    fn one_probe_at_a_time_and_a_failed_probe_opens_it_again() {
        let start = Instant::now();
        let mut breaker = opened(start);
        let after = start + POLICY.cool_down;
        assert_eq!(breaker.admit(after), Admission::Probe);
        assert_eq!(breaker.admit(after), Admission::Rejected, "a probe is out");
        breaker.record(after, CallOutcome::Failed);
        assert_eq!(breaker.state(after), BreakerState::Open);
        assert_eq!(
            breaker.admit(after + POLICY.cool_down - Duration::from_millis(1)),
            Admission::Rejected
        );
        assert_eq!(
            breaker.admit(after + POLICY.cool_down),
            Admission::Probe,
            "a whole cool-down after the failed probe"
        );
    }

    #[test]
    fn a_probe_that_never_reports_frees_its_slot_after_the_probe_timeout() {
        let start = Instant::now();
        let mut breaker = opened(start);
        let after = start + POLICY.cool_down;
        assert_eq!(breaker.admit(after), Admission::Probe);
        // Its caller was cancelled: no outcome ever comes.
        assert_eq!(
            breaker.admit(after + POLICY.probe_timeout - Duration::from_millis(1)),
            Admission::Rejected
        );
        let later = after + POLICY.probe_timeout;
        assert_eq!(breaker.admit(later), Admission::Probe);
        breaker.record(later, CallOutcome::Healthy);
        assert_eq!(breaker.state(later), BreakerState::Closed);
    }

    #[test]
    fn gauge_values_follow_the_contract() {
        assert_eq!(
            [
                BreakerState::Closed,
                BreakerState::HalfOpen,
                BreakerState::Open
            ]
            .map(BreakerState::gauge_value),
            [0, 1, 2]
        );
    }
}
