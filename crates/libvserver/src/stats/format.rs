//! Text formatting for `vserver-stat` and `vps`, matching util-vserver byte for byte.
//!
//! Pure functions only: no I/O, no clock, no `/proc`. The caller collects the numbers
//! (per-context totals for `vserver-stat`, the raw `ps` output and a pid → context lookup
//! for `vps`) and these functions lay them out exactly as util-vserver's
//! `src/vserver-stat.c` (`showContexts`, `shortenMem`, `shortenTime`, `formatName`) and
//! `src/vps.c` (`processOutput`, `writeContextInfo`) do.
//!
//! Known util-vserver quirks that are reproduced on purpose (so scripts parsing the
//! output keep working) are listed on the function that has them.

use serde::Serialize;

/// One row of `vserver-stat`: the totals of one context (xid).
///
/// Units: `user_usec` / `sys_usec` are accumulated CPU times in microseconds,
/// `uptime_secs` is the context's age in seconds, `vsz_bytes` / `rss_bytes` are sizes
/// in bytes (not pages). `name` is the guest's name; it is ignored for xid 0 and 1,
/// which util-vserver always names `root server` and `monitoring server`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatRow {
    /// Context id (xid); 0 is the host, 1 the monitoring context.
    pub xid: u32,
    /// Number of processes in the context.
    pub procs: u64,
    /// Total virtual memory size, in bytes.
    pub vsz_bytes: u64,
    /// Total resident set size, in bytes.
    pub rss_bytes: u64,
    /// Accumulated user-mode CPU time, in microseconds.
    pub user_usec: u64,
    /// Accumulated kernel-mode CPU time, in microseconds.
    pub sys_usec: u64,
    /// Time since the context started, in seconds.
    pub uptime_secs: u64,
    /// Guest name; empty when unknown (the NAME column is then left blank).
    pub name: String,
}

/// The header line of `vserver-stat`, without the trailing newline.
///
/// Column layout (0-based byte offsets, exclusive ends), shared by [`format_row`]:
/// CTX starts at 0 (left-aligned); PROC ends at 10; VSZ ends at 17; RSS ends at 24;
/// userTIME ends at 34; sysTIME ends at 44; UPTIME ends at 54; NAME starts at 55.
pub const STAT_HEADER: &str = "CTX   PROC    VSZ    RSS  userTIME   sysTIME    UPTIME NAME";

/// End offset (exclusive) of the PROC column in a `vserver-stat` line.
const PROC_END: usize = 10;
/// Width of the VSZ and RSS columns.
const MEM_WIDTH: usize = 7;
/// Width of each of the three time columns.
const TIME_WIDTH: usize = 10;
/// Start offsets of the VSZ, RSS, userTIME, sysTIME and UPTIME fields.
const VSZ_AT: usize = PROC_END;
const RSS_AT: usize = VSZ_AT + MEM_WIDTH;
const USER_AT: usize = RSS_AT + MEM_WIDTH;
const SYS_AT: usize = USER_AT + TIME_WIDTH;
const UPTIME_AT: usize = SYS_AT + TIME_WIDTH;
/// Start offset of the NAME column (one blank after UPTIME).
const NAME_AT: usize = UPTIME_AT + TIME_WIDTH + 1;
/// util-vserver cuts guest names to this many characters in the NAME column.
const NAME_MAX: usize = 20;

/// Suffixes of `shortenMem`: none (printed as a blank), K, M, G, T, then `+` for anything
/// at or above 1000 TiB-scaled units.
const MEM_SUFFIXES: [&str; 6] = ["", "K", "M", "G", "T", "+"];

/// The pieces of util-vserver's `shortenMem`: integer part, tenth digit (0 = none shown)
/// and suffix.
fn shorten_mem(bytes: u64) -> (u64, u64, &'static str) {
    let mut val = bytes;
    let mut tenth = 0;
    let mut suffix = "+";
    for s in MEM_SUFFIXES {
        if val < 1000 {
            suffix = s;
            break;
        }
        tenth = 10 * (val & 1023) / 1024;
        val >>= 10;
    }
    if val > 9999 {
        val = 9999;
    }
    if val >= 1000 {
        tenth = 0;
    }
    (val, tenth, suffix)
}

/// Formats a byte count the way `vserver-stat` shows VSZ and RSS, without padding.
///
/// Input: bytes. Output: e.g. `"0"`, `"512"`, `"12K"`, `"410M"`, `"1.8G"`, `"1.2+"`.
///
/// util-vserver's rule (`shortenMem`): while the value is ≥ 1000 it is divided by 1024
/// (note: the threshold is 1000, not 1024, so 1000 bytes is `"0.9K"`), stepping through
/// the suffixes none, K, M, G, T, `+`. One decimal is shown whenever the tenth digit of
/// the last division is non-zero, whatever the integer part (`"410.5M"` is possible);
/// the tenth is truncated, never rounded, and is computed from the integer value before
/// the last division, so 1843.2 MiB shows as `"1.7G"` and 1844 MiB as `"1.8G"`.
/// Values under 1000 bytes have no suffix (in a table row util-vserver prints a blank in
/// its place; [`format_row`] does the same).
pub fn format_size(bytes: u64) -> String {
    let (val, tenth, suffix) = shorten_mem(bytes);
    if tenth != 0 {
        format!("{val}.{tenth}{suffix}")
    } else {
        format!("{val}{suffix}")
    }
}

/// The 7-character VSZ/RSS cell of a table row, right-aligned; an unscaled value keeps
/// util-vserver's blank suffix, so it ends one column early.
fn size_cell(bytes: u64) -> String {
    let (_, _, suffix) = shorten_mem(bytes);
    let mut text = format_size(bytes);
    if suffix.is_empty() {
        text.push(' ');
    }
    format!("{text:>width$}", width = MEM_WIDTH)
}

/// util-vserver's `fillUintZero(buf, val, 2)`: zero-pad to two digits, then keep only the
/// first two digits (so 5 → `"05"`, 50 → `"50"`, 500 → `"50"`, 123 → `"12"`).
fn two_digits(val: u64) -> String {
    let mut s = format!("{val:02}");
    s.truncate(2);
    s
}

/// Formats a duration in milliseconds exactly like util-vserver's `shortenTime`.
fn format_time_msec(msec: u64) -> String {
    let ms = msec % 1000;
    let t = msec / 1000;
    let ss = t % 60;
    let t = t / 60;
    let mm = t % 60;
    let t = t / 60;
    let hh = t % 24;
    let days = t / 24;

    if days > 999 * 999 {
        "INVALID".to_string()
    } else if days > 999 {
        format!(
            "{}y{}d{}",
            days / 365,
            two_digits(days % 365),
            two_digits(hh)
        )
    } else if days > 0 {
        format!("{days}d{}h{}", two_digits(hh), two_digits(mm))
    } else if hh > 0 {
        format!("{hh}h{}m{}", two_digits(mm), two_digits(ss))
    } else {
        format!("{mm}m{}s{}", two_digits(ss), two_digits(ms))
    }
}

/// Formats a duration given in microseconds the way `vserver-stat` shows times, without
/// padding (at most 10 characters).
///
/// The microseconds are first truncated to milliseconds (util-vserver's resolution).
/// Ranges, by the whole days `d`, hours `h`, minutes `m`, seconds `s` and milliseconds:
/// - under 1 hour: `MmSSsCC`, e.g. `"1m23s12"`, `"0m21s50"`;
/// - under 1 day: `HhMMmSS`, e.g. `"1h02m03"`;
/// - 1 to 999 days: `DdHHhMM`, e.g. `"3d04h12"`;
/// - 1000 to 998001 days: `YyDDdHH` with 365-day years, e.g. `"2y27d05"`;
/// - beyond that: `"INVALID"`.
///
/// Quirks kept from util-vserver (`fillUintZero(.., 2)` zero-pads to two digits and then
/// keeps the *first* two digits): the `CC` field is the millisecond count 0..999 so
/// treated, i.e. true centiseconds (truncated) for 100..999 ms, but 5 ms shows as `05`
/// and 50 ms as `50`; likewise the day count of the year form keeps its first two digits
/// (270 days → `27`).
pub fn format_time_usec(usec: u64) -> String {
    format_time_msec(usec / 1000)
}

/// Overwrites `buf[at..]` with `text`, growing `buf` with blanks as needed (the C code
/// writes into a blank-filled buffer; later fields win where they overlap).
fn put(buf: &mut Vec<u8>, at: usize, text: &[u8]) {
    let end = at + text.len();
    if buf.len() < end {
        buf.resize(end, b' ');
    }
    buf[at..end].copy_from_slice(text);
}

/// Writes `text` right-aligned so that it ends at `end` (or starts at 0 if longer).
fn put_right(buf: &mut Vec<u8>, end: usize, text: &[u8]) {
    put(buf, end.saturating_sub(text.len()), text);
}

/// The NAME shown for a context: fixed names for xid 0 and 1, else `name` cut to
/// [`NAME_MAX`] characters.
fn display_name(xid: u32, name: &str) -> &str {
    match xid {
        0 => "root server",
        1 => "monitoring server",
        _ => match name.char_indices().nth(NAME_MAX) {
            Some((cut, _)) => &name[..cut],
            None => name,
        },
    }
}

/// Formats one `vserver-stat` data line (no trailing newline), aligned under
/// [`STAT_HEADER`].
///
/// Layout: xid left-aligned from column 0; process count right-aligned ending at
/// column 10; VSZ and RSS via [`format_size`], right-aligned in 7 columns each (a value
/// under 1000 bytes is followed by a blank, as in util-vserver); user time, system time
/// and uptime via [`format_time_usec`], right-aligned in 10 columns each; one blank; then
/// NAME: `root server` for xid 0, `monitoring server` for xid 1, otherwise `row.name` cut
/// to 20 characters (Unicode scalar values; util-vserver cuts 20 bytes). With an empty
/// name the line ends in the blank after UPTIME, as util-vserver's does. Over-wide values
/// (xid or process count wider than their columns) overwrite their neighbours the way
/// util-vserver's fixed buffer does.
pub fn format_row(row: &StatRow) -> String {
    let mut buf = vec![b' '; NAME_AT];
    put(&mut buf, 0, row.xid.to_string().as_bytes());
    put_right(&mut buf, PROC_END, row.procs.to_string().as_bytes());
    put(&mut buf, VSZ_AT, size_cell(row.vsz_bytes).as_bytes());
    put(&mut buf, RSS_AT, size_cell(row.rss_bytes).as_bytes());
    let times = [
        (USER_AT, format_time_usec(row.user_usec)),
        (SYS_AT, format_time_usec(row.sys_usec)),
        (
            UPTIME_AT,
            format_time_msec(row.uptime_secs.saturating_mul(1000)),
        ),
    ];
    for (at, text) in times {
        put_right(&mut buf, at + TIME_WIDTH, text.as_bytes());
    }
    // Every byte written so far is ASCII, so the conversion is lossless.
    let mut line = String::from_utf8_lossy(&buf).into_owned();
    line.push_str(display_name(row.xid, &row.name));
    line
}

/// Formats the whole `vserver-stat` table: [`STAT_HEADER`] then one [`format_row`] line
/// per row, in the given order, every line ending in `'\n'`. With no rows the result is
/// just the header line.
pub fn format_table(rows: &[StatRow]) -> String {
    let mut out = String::with_capacity((rows.len() + 1) * (NAME_AT + NAME_MAX + 1));
    out.push_str(STAT_HEADER);
    out.push('\n');
    for row in rows {
        out.push_str(&format_row(row));
        out.push('\n');
    }
    out
}

/// Width of the whole CONTEXT cell `vps` inserts (util-vserver's `CONTEXT_WIDTH`),
/// counting the xid, the blank after it and the padded name.
pub const VPS_CONTEXT_WIDTH: usize = 20;
/// Width the xid is right-aligned to inside the CONTEXT cell (util-vserver's
/// `CTXNR_WIDTH`).
pub const VPS_XID_WIDTH: usize = 5;
/// Name `vps` shows for xid 0 (the host).
pub const VPS_HOST_NAME: &str = "MAIN";
/// Name `vps` shows for xid 1 (the watch/monitoring context).
pub const VPS_WATCH_NAME: &str = "ALL_PROC";

/// Byte spans `(start, end)` of the blank-separated tokens of `line`.
fn tokens(line: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut start = None;
    for (i, c) in line.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                spans.push((s, i));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        spans.push((s, line.len()));
    }
    spans
}

/// Parses a token as a pid: ASCII digits only, fitting in `u32`.
fn parse_pid(token: &str) -> Option<u32> {
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    token.parse().ok()
}

/// Finds the pid of a data line: `(pid, end offset of the pid token)`. See
/// [`insert_context_column`] for the rule.
fn find_pid(line: &str, pid_end: usize, pid_index: usize) -> Option<(u32, usize)> {
    let spans = tokens(line);
    let positional = spans.iter().copied().find(|&(_, end)| end >= pid_end);
    let by_index = spans.get(pid_index).copied();
    let found = [positional, by_index]
        .into_iter()
        .flatten()
        .find_map(|(start, end)| parse_pid(line.get(start..end)?).map(|pid| (pid, end)));
    found
}

/// The text inserted right after the PID of a data line: a blank, the xid right-aligned
/// in [`VPS_XID_WIDTH`], a blank, and the name left-aligned so the cell is
/// [`VPS_CONTEXT_WIDTH`] wide (longer names are kept whole; the line's own separator
/// after the PID then follows them).
fn context_cell(xid: u32, name: &str) -> String {
    let name_width = VPS_CONTEXT_WIDTH - VPS_XID_WIDTH - 2;
    format!(
        " {xid:>xw$} {name:<nw$}",
        xw = VPS_XID_WIDTH,
        nw = name_width
    )
}

/// Inserts `text` into `line` at byte offset `at`; at the end of the line, trailing
/// blanks of `text` are dropped so no line gains trailing whitespace.
fn insert_at(out: &mut String, line: &str, at: usize, text: &str) {
    out.push_str(&line[..at]);
    if at == line.len() {
        out.push_str(text.trim_end());
    } else {
        out.push_str(text);
        out.push_str(&line[at..]);
    }
}

/// Inserts `vps`'s CONTEXT column right after the PID column of `ps` output.
///
/// `ps_output` is the complete output of `ps` (header line first, lines separated by
/// `'\n'`; a missing final newline is preserved). `lookup(pid)` returns `(xid, name)`
/// for a process; `None` means the host, shown as xid 0. The name shown is `MAIN` for
/// xid 0 and `ALL_PROC` for xid 1 whatever `lookup` returned, else the returned name.
///
/// Header: the PID column is the first blank-separated header token equal to `PID`
/// (so `PPID`, `TPID` ... never match). Right after it, `" CONTEXT"` padded with blanks to
/// [`VPS_CONTEXT_WIDTH`] characters is inserted. If the header has no such token (e.g.
/// `ps -o comm`, or `--no-headers`), the input is returned unchanged.
///
/// Data lines: the cell is a blank, the xid right-aligned in 5, a blank, the name padded
/// to 13 — 20 characters in all, exactly as util-vserver's `vps` (a longer name is kept
/// whole and pushes the rest of the line right). It is inserted right after the pid
/// token, which is found as follows:
/// 1. ps right-aligns PID, so the pid normally ends exactly where the header's `PID`
///    ends. Rule: the pid is the first token of the line that ends at or after the
///    header's PID end offset. This also covers a pid wider than the header (e.g. a
///    7-digit pid under a 5-wide `  PID`): ps prints it from the column start and shifts
///    the rest of the line right, so it ends after the header's end; inserting after the
///    token (not at the header offset) never splits it.
/// 2. If that token is not a number (e.g. an earlier column overflowed past the PID
///    end), the token with the same index as `PID` among the header tokens is used.
/// 3. If neither is a number that fits in `u32`, the line is copied unchanged.
///
/// Empty lines are copied unchanged. When the PID is the last column, trailing blanks
/// of the inserted text are dropped. Positions are byte offsets, so only columns before
/// PID need be ASCII for the header offsets to line up (rule 2 covers the rest).
pub fn insert_context_column(
    ps_output: &str,
    lookup: &dyn Fn(u32) -> Option<(u32, String)>,
) -> String {
    let mut lines = ps_output.split_inclusive('\n');
    let Some(header_full) = lines.next() else {
        return ps_output.to_string();
    };
    let header = header_full.strip_suffix('\n').unwrap_or(header_full);
    let header_tokens = tokens(header);
    let Some((pid_index, &(_, pid_end))) = header_tokens
        .iter()
        .enumerate()
        .find(|&(_, &(start, end))| &header[start..end] == "PID")
    else {
        return ps_output.to_string();
    };

    let mut out = String::with_capacity(ps_output.len() * 2);
    let header_cell = format!(" {:<width$}", "CONTEXT", width = VPS_CONTEXT_WIDTH - 1);
    insert_at(&mut out, header, pid_end, &header_cell);
    if header_full.len() != header.len() {
        out.push('\n');
    }

    for full in lines {
        let line = full.strip_suffix('\n').unwrap_or(full);
        match find_pid(line, pid_end, pid_index) {
            Some((pid, end)) => {
                let (xid, name) = lookup(pid).unwrap_or((0, String::new()));
                let name = match xid {
                    0 => VPS_HOST_NAME,
                    1 => VPS_WATCH_NAME,
                    _ => name.as_str(),
                };
                insert_at(&mut out, line, end, &context_cell(xid, name));
            }
            None => out.push_str(line),
        }
        if full.len() != line.len() {
            out.push('\n');
        }
    }
    out
}

/// The `vserver-stat --net` table: `CTX NAME STATE RXBYTES RXPKTS TXBYTES TXPKTS ADDRESSES`,
/// byte counts exact (for billing), one line per guest.
pub fn format_net_table(rows: &[super::NetRow]) -> String {
    let mut out = format!(
        "{:<6}{:<16}{:<8}{:>14}{:>10}{:>14}{:>10} ADDRESSES\n",
        "CTX", "NAME", "STATE", "RXBYTES", "RXPKTS", "TXBYTES", "TXPKTS"
    );
    for r in rows {
        let t = &r.traffic;
        out.push_str(&format!(
            "{:<6}{:<16}{:<8}{:>14}{:>10}{:>14}{:>10} {}\n",
            r.xid,
            r.name,
            if r.running { "running" } else { "stopped" },
            t.rx_bytes,
            t.rx_packets,
            t.tx_bytes,
            t.tx_packets,
            r.addresses.join(",")
        ));
    }
    out
}

/// The `vserver-stat --all` table: `NAME CTX STATE MARKS ADDRESSES`, one line per configured
/// guest; a broken configuration shows `config error` as its state.
pub fn format_all_table(rows: &[super::GuestRow]) -> String {
    let mut out = format!(
        "{:<16}{:<7}{:<14}{:<16} ADDRESSES\n",
        "NAME", "CTX", "STATE", "MARKS"
    );
    for r in rows {
        let state = match (&r.error, r.running) {
            (Some(_), true) => "running (bad config)",
            (Some(_), false) => "config error",
            (None, true) => "running",
            (None, false) if r.disabled => "stopped, disabled",
            (None, false) => "stopped",
        };
        let marks = if r.marks.is_empty() {
            String::from("-")
        } else {
            r.marks.join(",")
        };
        out.push_str(&format!(
            "{:<16}{:<7}{:<14}{:<16} {}\n",
            r.name,
            r.xid,
            state,
            marks,
            if r.addresses.is_empty() {
                String::from("-")
            } else {
                r.addresses.join(",")
            }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;
    const SEC: u64 = 1_000_000;

    fn row(xid: u32, name: &str) -> StatRow {
        StatRow {
            xid,
            procs: 1,
            vsz_bytes: 0,
            rss_bytes: 0,
            user_usec: 0,
            sys_usec: 0,
            uptime_secs: 0,
            name: name.to_string(),
        }
    }

    /// End offsets of the header's column titles (PROC..UPTIME) and NAME's start.
    fn header_ends() -> Vec<usize> {
        let spans = tokens(STAT_HEADER);
        spans[1..7].iter().map(|&(_, e)| e).collect()
    }

    fn root_row() -> StatRow {
        StatRow {
            xid: 0,
            procs: 92,
            vsz_bytes: 1844 * MIB,
            rss_bytes: 410 * MIB,
            user_usec: 3723 * SEC,
            sys_usec: 1500 * SEC,
            uptime_secs: ((3 * 24 + 4) * 60 + 12) * 60 + 7,
            name: String::new(),
        }
    }

    fn web_row() -> StatRow {
        StatRow {
            xid: 42,
            procs: 17,
            vsz_bytes: 268 * MIB,
            rss_bytes: 61 * MIB,
            user_usec: 83_120_000,
            sys_usec: 21_500_000,
            uptime_secs: (2 * 60 + 3) * 60 + 11,
            name: "web01".to_string(),
        }
    }

    #[test]
    fn header_offsets() {
        assert_eq!(header_ends(), vec![10, 17, 24, 34, 44, 54]);
        assert_eq!(STAT_HEADER.find("NAME"), Some(NAME_AT));
    }

    #[test]
    fn example_rows_byte_for_byte() {
        let r0 = "0       92   1.8G   410M   1h02m03  25m00s00   3d04h12 root server";
        let r1 = "42      17   268M    61M   1m23s12   0m21s50   2h03m11 web01";
        assert_eq!(format_row(&root_row()), r0);
        assert_eq!(format_row(&web_row()), r1);
        let table = format_table(&[root_row(), web_row()]);
        assert_eq!(table, format!("{STAT_HEADER}\n{r0}\n{r1}\n"));
    }

    #[test]
    fn rows_align_with_header() {
        let ends = header_ends();
        for r in [root_row(), web_row()] {
            let line = format_row(&r);
            let spans = tokens(&line);
            let got: Vec<usize> = spans[1..7].iter().map(|&(_, e)| e).collect();
            assert_eq!(got, ends, "{line:?}");
            assert_eq!(spans[7].0, NAME_AT);
        }
    }

    #[test]
    fn table_without_rows_is_header() {
        assert_eq!(format_table(&[]), format!("{STAT_HEADER}\n"));
    }

    #[test]
    fn size_scaling() {
        assert_eq!(format_size(0), "0");
        assert_eq!(format_size(999), "999");
        assert_eq!(format_size(1000), "0.9K");
        assert_eq!(format_size(1024), "1K");
        assert_eq!(format_size(12 * 1024), "12K");
        assert_eq!(format_size(12 * 1024 + 512), "12.5K");
        assert_eq!(format_size(410 * MIB), "410M");
        assert_eq!(format_size(410 * MIB + MIB / 2), "410.5M");
        assert_eq!(format_size(268 * MIB), "268M");
        assert_eq!(format_size(61 * MIB), "61M");
        // Truncation on the MiB value before the last division.
        assert_eq!(format_size(1_932_735_283), "1.7G");
        assert_eq!(format_size(1844 * MIB), "1.8G");
        assert_eq!(format_size(999 * MIB), "999M");
        assert_eq!(format_size(1000 * MIB), "0.9G");
        assert_eq!(format_size(3 << 40), "3T");
        assert_eq!(format_size(5 << 50), "5+");
        assert_eq!(format_size(u64::MAX), "15.9+");
    }

    #[test]
    fn size_cells() {
        assert_eq!(size_cell(0), "     0 ");
        assert_eq!(size_cell(999), "   999 ");
        assert_eq!(size_cell(1024), "     1K");
        assert_eq!(size_cell(999 * 1024 + 1023), " 999.9K");
        assert_eq!(size_cell(u64::MAX), "  15.9+");
        let mut r = row(5, "tiny");
        r.vsz_bytes = 512;
        assert_eq!(&format_row(&r)[10..17], "   512 ");
    }

    #[test]
    fn time_ranges() {
        assert_eq!(format_time_usec(0), "0m00s00");
        assert_eq!(format_time_usec(83_120_000), "1m23s12");
        assert_eq!(format_time_usec(21_500_000), "0m21s50");
        assert_eq!(format_time_usec(21_999_999), "0m21s99");
        assert_eq!(format_time_usec(3599 * SEC), "59m59s00");
        assert_eq!(format_time_usec(3600 * SEC), "1h00m00");
        assert_eq!(format_time_usec(3723 * SEC), "1h02m03");
        assert_eq!(format_time_usec(1500 * SEC), "25m00s00");
        assert_eq!(format_time_usec((86_400 - 1) * SEC), "23h59m59");
        assert_eq!(format_time_usec(86_400 * SEC), "1d00h00");
        assert_eq!(
            format_time_usec(((3 * 24 + 4) * 60 + 12) * 60 * SEC),
            "3d04h12"
        );
        assert_eq!(format_time_usec((999 * 86_400 + 86_399) * SEC), "999d23h59");
        assert_eq!(
            format_time_usec((1000 * 86_400 + 5 * 3600) * SEC),
            "2y27d05"
        );
        assert_eq!(format_time_usec((1100 * 86_400) * SEC), "3y05d00");
        assert_eq!(format_time_usec((999 * 999 * 86_400) * SEC), "2734y91d00");
        assert_eq!(format_time_usec((999 * 999 + 1) * 86_400 * SEC), "INVALID");
        assert_eq!(format_time_usec(u64::MAX), "INVALID");
    }

    #[test]
    fn time_millisecond_quirk() {
        // util-vserver prints the first two digits of the zero-padded millisecond count.
        assert_eq!(format_time_usec(5_000), "0m00s05");
        assert_eq!(format_time_usec(50_000), "0m00s50");
        assert_eq!(format_time_usec(500_000), "0m00s50");
        assert_eq!(format_time_usec(999), "0m00s00");
    }

    #[test]
    fn time_columns_never_overflow() {
        let widest = format_time_usec((999 * 999 * 86_400 + 23 * 3600) * SEC);
        assert!(widest.len() <= TIME_WIDTH, "{widest}");
        let mut r = row(7, "x");
        r.uptime_secs = u64::MAX;
        assert_eq!(&format_row(&r)[44..55], "   INVALID ");
    }

    #[test]
    fn names() {
        assert!(format_row(&row(0, "ignored")).ends_with(" root server"));
        assert!(format_row(&row(1, "ignored")).ends_with(" monitoring server"));
        let long = format_row(&row(40000, "a-very-long-guest-name-indeed"));
        assert_eq!(&long[NAME_AT..], "a-very-long-guest-na");
        let utf8 = format_row(&row(40001, "ééééééééééééééééééééééé"));
        assert_eq!(utf8[NAME_AT..].chars().count(), 20);
        let unnamed = format_row(&row(9, ""));
        assert_eq!(unnamed.len(), NAME_AT);
        assert!(unnamed.ends_with("0m00s00 "));
    }

    #[test]
    fn wide_xid_and_procs() {
        let mut r = row(65535, "g");
        r.procs = 12345;
        assert!(format_row(&r).starts_with("6553512345"));
        let mut r = row(u32::MAX, "g");
        r.procs = 7;
        assert!(format_row(&r).starts_with("4294967297"));
        let mut r = row(2, "g");
        r.procs = u64::MAX;
        // Wider than the whole prefix: later fields overwrite it, as in the C buffer.
        let line = format_row(&r);
        assert!(line.starts_with("1844674407"), "{line}");
        assert_eq!(&line[10..17], "     0 ");
    }

    #[test]
    fn stat_row_serializes() {
        let json = serde_json::to_string(&web_row()).unwrap();
        assert!(json.contains("\"xid\":42"), "{json}");
        assert!(json.contains("\"name\":\"web01\""), "{json}");
    }

    // ---- vps ----

    fn lookup(pid: u32) -> Option<(u32, String)> {
        match pid {
            1 | 2 => None,
            300 => Some((1, "watch".to_string())),
            1234 | 4194303 | 123456 => Some((42, "web01".to_string())),
            5678 => Some((40000, "a-long-guest-name".to_string())),
            _ => Some((0, "host".to_string())),
        }
    }

    #[test]
    fn vps_aux() {
        let ps = "\
USER         PID %CPU %MEM    VSZ   RSS TTY      STAT START   TIME COMMAND
root           1  0.0  0.1 168932 13044 ?        Ss   Jan01   0:07 /sbin/init
www-data    1234  0.3  1.2 215024 98112 ?        S    10:02   1:23 nginx: worker process
";
        let want = "\
USER         PID CONTEXT             %CPU %MEM    VSZ   RSS TTY      STAT START   TIME COMMAND
root           1     0 MAIN           0.0  0.1 168932 13044 ?        Ss   Jan01   0:07 /sbin/init
www-data    1234    42 web01          0.3  1.2 215024 98112 ?        S    10:02   1:23 nginx: worker process
";
        assert_eq!(insert_context_column(ps, &lookup), want);
    }

    #[test]
    fn vps_ef() {
        let ps = "\
UID          PID    PPID  C STIME TTY          TIME CMD
root           1       0  0 Jan01 ?        00:00:07 /sbin/init
root           2       0  0 Jan01 ?        00:00:00 [kthreadd]
nobody       300       1  0 09:15 ?        00:00:00 /usr/sbin/watchd
";
        let want = "\
UID          PID CONTEXT                PPID  C STIME TTY          TIME CMD
root           1     0 MAIN                0  0 Jan01 ?        00:00:07 /sbin/init
root           2     0 MAIN                0  0 Jan01 ?        00:00:00 [kthreadd]
nobody       300     1 ALL_PROC            1  0 09:15 ?        00:00:00 /usr/sbin/watchd
";
        assert_eq!(insert_context_column(ps, &lookup), want);
    }

    #[test]
    fn vps_pid_first() {
        let ps = "    PID COMMAND\n      1 systemd\n   1234 nginx\n   5678 postgres\n";
        let want = "    PID CONTEXT             COMMAND\n      \
                    1     0 MAIN          systemd\n   \
                    1234    42 web01         nginx\n   \
                    5678 40000 a-long-guest-name postgres\n";
        assert_eq!(insert_context_column(ps, &lookup), want);
    }

    #[test]
    fn vps_pid_wider_than_header() {
        // Old procps sized PID to 5; a 7-digit pid overflows and shifts the rest right.
        let ps = "  PID TTY          TIME CMD\n    1 ?        00:00:07 init\n4194303 pts/0    00:00:00 bash\n";
        let want = "  PID CONTEXT             TTY          TIME CMD\n    \
                    1     0 MAIN          ?        00:00:07 init\n\
                    4194303    42 web01         pts/0    00:00:00 bash\n";
        assert_eq!(insert_context_column(ps, &lookup), want);

        // Same in the middle of `ps aux`-style output.
        let ps = "USER       PID %CPU COMMAND\nwww      123456  0.3 nginx\n";
        let want = "USER       PID CONTEXT             %CPU COMMAND\n\
                    www      123456    42 web01          0.3 nginx\n";
        assert_eq!(insert_context_column(ps, &lookup), want);
    }

    #[test]
    fn vps_fallback_to_token_index() {
        // The user column overflows past the PID end: the positional token is not a
        // number, so the token with PID's header index is used.
        let ps = "USER   PID CMD\nverylonguser 1234 nginx\n";
        let want =
            "USER   PID CONTEXT             CMD\nverylonguser 1234    42 web01         nginx\n";
        assert_eq!(insert_context_column(ps, &lookup), want);
    }

    #[test]
    fn vps_ppid_before_pid_and_pid_last() {
        let ps = "   PPID     PID\n      0       1\n      1    1234";
        let want =
            "   PPID     PID CONTEXT\n      0       1     0 MAIN\n      1    1234    42 web01";
        assert_eq!(insert_context_column(ps, &lookup), want);
    }

    #[test]
    fn vps_no_pid_column_unchanged() {
        for ps in [
            "COMMAND\nsystemd\nnginx\n",
            "",
            "\n",
            "   PPID COMMAND\n      0 systemd\n",
            "      1 ?        00:00:07 init\n",
        ] {
            assert_eq!(insert_context_column(ps, &lookup), ps);
        }
    }

    #[test]
    fn vps_unparseable_and_empty_lines_copied() {
        let ps = "  PID CMD\n\n  abc weird\n99999999999 huge\n    1 init";
        let want = "  PID CONTEXT             CMD\n\n  abc weird\n99999999999 huge\n    1     0 MAIN          init";
        assert_eq!(insert_context_column(ps, &lookup), want);
    }

    #[test]
    fn vps_header_only() {
        assert_eq!(
            insert_context_column("  PID TTY          TIME CMD\n", &lookup),
            "  PID CONTEXT             TTY          TIME CMD\n"
        );
    }
}
