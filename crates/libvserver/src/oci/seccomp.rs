//! `linux.seccomp` of a `config.json` compiled with libseccomp (seccomp_rule_add(3)) into the
//! engine's [`SeccompProgram`], loaded by the container's init like a guest's filter.
//! Syscall names unknown to this libseccomp or architecture are skipped (profiles list
//! syscalls of every kernel); a rule whose action is the default one is redundant and skipped
//! (libseccomp refuses it).

use super::spec::{Seccomp, SpecError};
use crate::security::seccomp::SeccompProgram;
use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use std::str::FromStr;

fn refuse(path: &str, field: String, message: String) -> SpecError {
    SpecError::Unsupported {
        path: path.to_string(),
        field,
        message,
    }
}

fn action(
    path: &str,
    field: &str,
    name: &str,
    errno: Option<u32>,
) -> Result<ScmpAction, SpecError> {
    let errno = errno.map(|e| e as i32).unwrap_or(libc::EPERM);
    match name {
        "SCMP_ACT_NOTIFY" => Err(refuse(
            path,
            field.to_string(),
            "seccomp notify is not supported".into(),
        )),
        "SCMP_ACT_ERRNO" => Ok(ScmpAction::Errno(errno)),
        "SCMP_ACT_TRACE" => Ok(ScmpAction::Trace(errno as u16)),
        other => ScmpAction::from_str(other, None)
            .map_err(|_| refuse(path, field.to_string(), format!("unknown action '{other}'"))),
    }
}

/// Compile `s` (from config.json at `path`).
///
/// Errors: [`SpecError::Unsupported`] naming the field for unknown actions, architectures,
/// operators or flags, and for a filter libseccomp cannot build.
pub fn compile(path: &str, s: &Seccomp) -> Result<SeccompProgram, SpecError> {
    let lib =
        |field: &str, e: &dyn std::fmt::Display| refuse(path, field.to_string(), e.to_string());
    let default = action(
        path,
        "linux.seccomp.defaultAction",
        &s.default_action,
        s.default_errno_ret,
    )?;
    for (i, f) in s.flags.iter().enumerate() {
        // The init is single-threaded when it loads the filter: TSYNC changes nothing.
        if f != "SECCOMP_FILTER_FLAG_TSYNC" {
            return Err(refuse(
                path,
                format!("linux.seccomp.flags[{i}]"),
                format!("'{f}' is not supported"),
            ));
        }
    }
    let mut ctx = ScmpFilterContext::new(default).map_err(|e| lib("linux.seccomp", &e))?;
    ctx.set_ctl_nnp(false)
        .map_err(|e| lib("linux.seccomp", &e))?;
    for (i, a) in s.architectures.iter().enumerate() {
        let arch = ScmpArch::from_str(a).map_err(|_| {
            refuse(
                path,
                format!("linux.seccomp.architectures[{i}]"),
                format!("unknown architecture '{a}'"),
            )
        })?;
        // The native one is there already; one unknown to this libseccomp is an error.
        if arch != ScmpArch::native() {
            ctx.add_arch(arch)
                .map_err(|e| lib(&format!("linux.seccomp.architectures[{i}]"), &e))?;
        }
    }
    for (i, r) in s.syscalls.iter().enumerate() {
        let field = format!("linux.seccomp.syscalls[{i}]");
        let act = action(path, &format!("{field}.action"), &r.action, r.errno_ret)?;
        if act == default {
            continue;
        }
        let mut conds = Vec::new();
        for (j, a) in r.args.iter().enumerate() {
            let op = match a.op.as_str() {
                "SCMP_CMP_MASKED_EQ" => ScmpCompareOp::MaskedEqual(a.value),
                other => ScmpCompareOp::from_str(other).map_err(|_| {
                    refuse(
                        path,
                        format!("{field}.args[{j}].op"),
                        format!("unknown operator '{other}'"),
                    )
                })?,
            };
            if a.index > 5 {
                return Err(refuse(
                    path,
                    format!("{field}.args[{j}].index"),
                    format!("{} is not 0-5", a.index),
                ));
            }
            let datum = if matches!(op, ScmpCompareOp::MaskedEqual(_)) {
                a.value_two.unwrap_or(0)
            } else {
                a.value
            };
            conds.push(ScmpArgCompare::new(a.index, op, datum));
        }
        // Conditions on one argument twice cannot be one rule: one rule per condition then
        // (any of them matching applies the action), as runc does.
        let mut idx: Vec<u32> = r.args.iter().map(|a| a.index).collect();
        idx.sort_unstable();
        let repeated = idx.windows(2).any(|w| w[0] == w[1]);
        for name in &r.names {
            let Ok(nr) = ScmpSyscall::from_name(name) else {
                continue;
            };
            let res = if repeated {
                conds.iter().try_for_each(|c| {
                    ctx.add_rule_conditional(act, nr, std::slice::from_ref(c))
                        .map(drop)
                })
            } else {
                ctx.add_rule_conditional(act, nr, &conds).map(drop)
            };
            res.map_err(|e| lib(&format!("{field} ({name})"), &e))?;
        }
    }
    SeccompProgram::from_context(&ctx).map_err(|e| lib("linux.seccomp", &e))
}
