//! The head sampler: the standard `OTEL_TRACES_SAMPLER`/`OTEL_TRACES_SAMPLER_ARG` choices, with
//! a ratio that can change while the process runs (SIGHUP), which the SDK's own samplers cannot.

use opentelemetry::trace::{Link, SpanKind, TraceContextExt, TraceId, TraceState};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{SamplingDecision, SamplingResult, ShouldSample};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Root {
    AlwaysOn,
    AlwaysOff,
    Ratio,
}

/// A sampler whose ratio is shared with [`crate::ReloadHandle`].
#[derive(Debug, Clone)]
pub(crate) struct LiveSampler {
    root: Root,
    parent_based: bool,
    /// The ratio's f64 bits.
    ratio: Arc<AtomicU64>,
}

impl LiveSampler {
    /// Reads the standard variables; anything unknown falls back to the specification's
    /// default, `parentbased_always_on`, with a warning.
    pub(crate) fn from_env(sampler: Option<&str>, arg: Option<&str>) -> (Self, Vec<String>) {
        let mut warnings = Vec::new();
        let (root, parent_based) = match sampler.unwrap_or("parentbased_always_on") {
            "always_on" => (Root::AlwaysOn, false),
            "always_off" => (Root::AlwaysOff, false),
            "traceidratio" => (Root::Ratio, false),
            "parentbased_always_on" => (Root::AlwaysOn, true),
            "parentbased_always_off" => (Root::AlwaysOff, true),
            "parentbased_traceidratio" => (Root::Ratio, true),
            other => {
                warnings.push(format!(
                    "OTEL_TRACES_SAMPLER={other:?} is not supported; using parentbased_always_on"
                ));
                (Root::AlwaysOn, true)
            }
        };
        let ratio = match arg.map(str::parse::<f64>) {
            None => 1.0,
            Some(Ok(r)) if (0.0..=1.0).contains(&r) => r,
            Some(_) => {
                warnings
                    .push("OTEL_TRACES_SAMPLER_ARG is not a number in [0, 1]; using 1.0".into());
                1.0
            }
        };
        let sampler = LiveSampler {
            root,
            parent_based,
            ratio: Arc::new(AtomicU64::new(ratio.to_bits())),
        };
        (sampler, warnings)
    }

    pub(crate) fn ratio_handle(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.ratio)
    }

    fn root_decision(&self, trace_id: TraceId) -> SamplingDecision {
        let sampled = match self.root {
            Root::AlwaysOn => true,
            Root::AlwaysOff => false,
            Root::Ratio => {
                let ratio = f64::from_bits(self.ratio.load(Ordering::Relaxed));
                // As the specification's TraceIdRatioBased: the low 63 bits of the trace id
                // against ratio * 2^63, so every service with the same ratio agrees.
                let bytes = trace_id.to_bytes();
                let low = u64::from_be_bytes(bytes[8..16].try_into().unwrap_or([0; 8])) >> 1;
                let bound = (ratio.clamp(0.0, 1.0) * (1u64 << 63) as f64) as u64;
                low < bound
            }
        };
        if sampled {
            SamplingDecision::RecordAndSample
        } else {
            SamplingDecision::Drop
        }
    }
}

impl ShouldSample for LiveSampler {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        _name: &str,
        _span_kind: &SpanKind,
        _attributes: &[KeyValue],
        _links: &[Link],
    ) -> SamplingResult {
        if self.parent_based
            && let Some(parent) = parent_context.filter(|cx| cx.has_active_span())
        {
            let parent_span = parent.span();
            let parent = parent_span.span_context();
            if parent.is_valid() {
                let decision = if parent.is_sampled() {
                    SamplingDecision::RecordAndSample
                } else {
                    SamplingDecision::Drop
                };
                return SamplingResult {
                    decision,
                    attributes: Vec::new(),
                    trace_state: parent.trace_state().clone(),
                };
            }
        }
        SamplingResult {
            decision: self.root_decision(trace_id),
            attributes: Vec::new(),
            trace_state: TraceState::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(sampler: &LiveSampler, trace_id: u128) -> SamplingDecision {
        sampler
            .should_sample(
                None,
                TraceId::from(trace_id),
                "x",
                &SpanKind::Server,
                &[],
                &[],
            )
            .decision
    }

    #[test]
    fn a_ratio_of_zero_samples_nothing_and_one_samples_everything() {
        let (zero, _) = LiveSampler::from_env(Some("traceidratio"), Some("0"));
        let (one, _) = LiveSampler::from_env(Some("traceidratio"), Some("1"));
        for id in [1u128, u128::MAX, 0x1234_5678_9abc_def0_1234_5678_9abc_def0] {
            assert_eq!(decide(&zero, id), SamplingDecision::Drop);
            assert_eq!(decide(&one, id), SamplingDecision::RecordAndSample);
        }
    }

    #[test]
    fn the_ratio_changes_live() {
        let (sampler, _) = LiveSampler::from_env(Some("parentbased_traceidratio"), Some("0"));
        assert_eq!(decide(&sampler, 42), SamplingDecision::Drop);
        sampler
            .ratio_handle()
            .store(1.0f64.to_bits(), Ordering::Relaxed);
        assert_eq!(decide(&sampler, 42), SamplingDecision::RecordAndSample);
    }

    #[test]
    fn unknown_settings_fall_back_with_a_warning() {
        let (sampler, warnings) = LiveSampler::from_env(Some("sometimes"), Some("2"));
        assert_eq!(warnings.len(), 2);
        assert_eq!(decide(&sampler, 7), SamplingDecision::RecordAndSample);
    }
}
