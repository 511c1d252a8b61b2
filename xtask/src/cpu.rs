//! CPU time of processes from `/proc`: the bench's server, and the load generators this
//! process ran and waited for.

/// Linux reports process times in ticks of 1/100 s (`USER_HZ`).
const TICKS_PER_SECOND: f64 = 100.0;

/// utime, stime, cutime and cstime of a `/proc/PID/stat` line, in seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct CpuTimes {
    pub(crate) user: f64,
    pub(crate) system: f64,
    /// Of the children that were waited for.
    pub(crate) children_user: f64,
    pub(crate) children_system: f64,
}

impl CpuTimes {
    /// From the text of `/proc/PID/stat`: fields 14 to 17, counted after the command
    /// name, which may itself hold spaces and parentheses.
    pub(crate) fn parse(stat: &str) -> Option<Self> {
        let after = stat.rsplit_once(')')?.1;
        let f: Vec<&str> = after.split_whitespace().collect();
        let secs =
            |i: usize| -> Option<f64> { Some(f.get(i)?.parse::<f64>().ok()? / TICKS_PER_SECOND) };
        Some(Self {
            user: secs(11)?,
            system: secs(12)?,
            children_user: secs(13)?,
            children_system: secs(14)?,
        })
    }

    pub(crate) fn of(pid: &str) -> Option<Self> {
        Self::parse(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
    }

    pub(crate) fn own(&self) -> f64 {
        self.user + self.system
    }

    pub(crate) fn children(&self) -> f64 {
        self.children_user + self.children_system
    }
}

/// CPU seconds of this process's children that have exited and been waited for.
pub(crate) fn children_cpu() -> f64 {
    CpuTimes::of("self").map_or(0.0, |t| t.children())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_times_come_from_proc_stat() {
        let stat =
            "4242 (a (b) c) S 1 2 3 0 -1 4194304 10 0 0 0 250 50 700 300 20 0 1 0 100 1000 100";
        let t = CpuTimes::parse(stat).unwrap();
        assert_eq!(
            t,
            CpuTimes {
                user: 2.5,
                system: 0.5,
                children_user: 7.0,
                children_system: 3.0
            }
        );
        assert!((t.own() - 3.0).abs() < 1e-9 && (t.children() - 10.0).abs() < 1e-9);
        assert!(CpuTimes::parse("4242 (x) S 1 2").is_none());
        assert!(CpuTimes::of("self").is_some());
    }
}
