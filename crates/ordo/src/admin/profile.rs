//! `GET /debug/pprof/profile?seconds=N`: samples the process's CPU for N seconds (1 to 60,
//! default 10) at 99 Hz and answers a flame graph (SVG), or the collapsed stacks
//! (`format=collapsed`) that flame-graph tools and speedscope read. One profile at a time.

use axum::extract::Query;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use ordo_domain::{Error, ErrorKind};
use ordo_http_api::error::ApiError;
use serde::Deserialize;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Deserialize)]
pub struct ProfileQuery {
    seconds: Option<u64>,
    format: Option<String>,
}

static PROFILING: AtomicBool = AtomicBool::new(false);

/// Clears [`PROFILING`] however the profile ends.
struct ProfilingSlot;

impl Drop for ProfilingSlot {
    fn drop(&mut self) {
        PROFILING.store(false, Ordering::Release);
    }
}

pub async fn cpu_profile(Query(query): Query<ProfileQuery>) -> Response {
    let seconds = query.seconds.unwrap_or(10);
    if !(1..=60).contains(&seconds) {
        return ApiError(Error::invalid_field("seconds", "must be between 1 and 60"))
            .into_response();
    }
    let collapsed = match query.format.as_deref() {
        None | Some("flamegraph") => false,
        Some("collapsed") => true,
        Some(_) => {
            return ApiError(Error::invalid_field(
                "format",
                "must be flamegraph or collapsed",
            ))
            .into_response();
        }
    };
    if PROFILING.swap(true, Ordering::AcqRel) {
        return ApiError(Error::conflict("a CPU profile is already running")).into_response();
    }
    let slot = ProfilingSlot;
    // The profiler guard is not Send: it lives on a blocking thread for the whole sample.
    let result = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let sampled = sample(std::time::Duration::from_secs(seconds), collapsed);
        give_memory_back();
        sampled
    })
    .await;
    match result {
        Ok(Ok((content_type, body))) => {
            ([(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        Ok(Err(message)) => ApiError(Error::new(ErrorKind::Internal, message)).into_response(),
        Err(_) => ApiError(Error::internal("the profiler thread failed")).into_response(),
    }
}

#[cfg(unix)]
fn sample(
    duration: std::time::Duration,
    collapsed: bool,
) -> Result<(&'static str, Vec<u8>), String> {
    let guard = pprof::ProfilerGuardBuilder::default()
        .frequency(99)
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
        .map_err(|e| format!("cannot start the profiler: {e}"))?;
    std::thread::sleep(duration);
    let report = guard
        .report()
        .build()
        .map_err(|e| format!("cannot build the profile: {e}"))?;
    if collapsed {
        let mut text = String::new();
        for (frames, count) in &report.data {
            let stack: Vec<String> = frames
                .frames
                .iter()
                .rev()
                .flat_map(|symbols| symbols.iter().map(|s| s.name()))
                .collect();
            text.push_str(&format!(
                "{};{} {count}\n",
                frames.thread_name,
                stack.join(";")
            ));
        }
        Ok(("text/plain; charset=utf-8", text.into_bytes()))
    } else if report.data.is_empty() {
        // An idle process gives no samples, and the flame-graph drawer refuses an empty input.
        let svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"600\" height=\"40\">\
             <text x=\"10\" y=\"25\">no CPU samples in {} s: the process was idle</text></svg>",
            duration.as_secs()
        );
        Ok(("image/svg+xml", svg.into_bytes()))
    } else {
        let mut svg = Vec::new();
        report
            .flamegraph(&mut svg)
            .map_err(|e| format!("cannot draw the flame graph: {e}"))?;
        Ok(("image/svg+xml", svg))
    }
}

/// Symbolizing a profile parses the binary's debug information (a few hundred MB for a build
/// with line tables) into a cache that `backtrace` keeps for the life of the process, and the
/// freed report leaves the heap grown: without this, every profile's peak stays resident.
/// Drops the cache, then hands the free pages back to the kernel: jemalloc's (the global
/// allocator: this thread's cache, then every arena's unused pages at once, not over its
/// ten-second decay) and glibc's (what C code such as SQLite allocated).
#[cfg(unix)]
fn give_memory_back() {
    backtrace::clear_symbol_cache();
    // This thread's cache, then every arena (4096 is MALLCTL_ARENAS_ALL). A failure only means
    // memory kept.
    #[cfg(not(target_env = "msvc"))]
    for command in [&b"thread.tcache.flush\0"[..], b"arena.4096.purge\0"] {
        // SAFETY: a NUL-terminated name of a command that reads and writes nothing, called
        // with no buffers, as jemalloc's manual specifies.
        let status = unsafe {
            tikv_jemalloc_sys::mallctl(
                command.as_ptr().cast(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            )
        };
        if status != 0 {
            tracing::debug!(status, "jemalloc refused a purge after the profile");
        }
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator's arenas; it touches no
    // live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(unix))]
fn give_memory_back() {}

#[cfg(not(unix))]
fn sample(_: std::time::Duration, _: bool) -> Result<(&'static str, Vec<u8>), String> {
    Err("CPU profiles need a Unix system".to_owned())
}
