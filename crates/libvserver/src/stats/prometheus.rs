//! The Prometheus text exposition format (version 0.0.4) of vserver-stat's rows.

use super::format::StatRow;
use std::fmt::Write;

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Render `rows` as Prometheus metrics, one family per figure, labelled `xid` and `name`.
/// Times in seconds, sizes in bytes.
pub fn render(rows: &[StatRow]) -> String {
    type Get = fn(&StatRow) -> f64;
    let families: [(&str, &str, &str, Get); 6] = [
        (
            "vserver_processes",
            "gauge",
            "Processes in the context.",
            |r| r.procs as f64,
        ),
        (
            "vserver_memory_vsz_bytes",
            "gauge",
            "Virtual memory of the context's processes.",
            |r| r.vsz_bytes as f64,
        ),
        (
            "vserver_memory_rss_bytes",
            "gauge",
            "Resident memory of the context's processes.",
            |r| r.rss_bytes as f64,
        ),
        (
            "vserver_cpu_user_seconds_total",
            "counter",
            "User CPU time of the context.",
            |r| r.user_usec as f64 / 1e6,
        ),
        (
            "vserver_cpu_system_seconds_total",
            "counter",
            "System CPU time of the context.",
            |r| r.sys_usec as f64 / 1e6,
        ),
        (
            "vserver_uptime_seconds",
            "gauge",
            "Time since the context started.",
            |r| r.uptime_secs as f64,
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, get) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for r in rows {
            let _ = writeln!(
                out,
                "{name}{{xid=\"{}\",name=\"{}\"}} {}",
                r.xid,
                escape(&r.name),
                get(r)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_families_and_escapes_labels() {
        let row = StatRow {
            xid: 42,
            procs: 3,
            vsz_bytes: 10,
            rss_bytes: 5,
            user_usec: 1_500_000,
            sys_usec: 0,
            uptime_secs: 7,
            name: "we\"b".into(),
        };
        let t = render(&[row]);
        assert!(t.contains("# TYPE vserver_processes gauge\nvserver_processes{xid=\"42\",name=\"we\\\"b\"} 3\n"), "{t}");
        assert!(
            t.contains("vserver_cpu_user_seconds_total{xid=\"42\",name=\"we\\\"b\"} 1.5\n"),
            "{t}"
        );
    }
}
