//! The lab's error type.

use std::path::PathBuf;

/// Everything that can go wrong starting, driving or stopping a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The lab manipulates mounts, /etc/hosts and users: it must run as root.
    #[error("the lab needs root (unshare, mount, /etc/hosts); run it as root")]
    NotRoot,

    /// A program the lab relies on is not installed.
    #[error("{program} is not installed ({hint})")]
    MissingProgram {
        /// Absolute path or name of the program.
        program: String,
        /// Which package provides it.
        hint: String,
    },

    /// The configuration asked for something impossible.
    #[error("invalid lab configuration: {0}")]
    Config(String),

    /// The scenario file could not be read or understood.
    #[error("scenario {path}: {message}")]
    Scenario {
        /// The scenario file.
        path: PathBuf,
        /// What was wrong with it.
        message: String,
    },

    /// A host name given to the API is not one of the lab's hosts.
    #[error("unknown lab host {0:?}")]
    UnknownHost(String),

    /// Every loopback /16 the lab may use is taken by another running lab.
    #[error("no free lab address range: {0} labs are already running")]
    NoFreeSlot(usize),

    /// A lab is already running in this directory.
    #[error("a lab is already running in {dir} (daemon pid {pid}); run `fleetroll-lab down --dir {dir}` first", dir = .dir.display())]
    AlreadyRunning {
        /// The lab directory.
        dir: PathBuf,
        /// The daemon serving it.
        pid: i32,
    },

    /// No lab state was found where one was expected.
    #[error("no lab in {0}")]
    NoLab(PathBuf),

    /// An external command failed.
    #[error("{command} failed: {message}")]
    Command {
        /// The command line, for humans.
        command: String,
        /// Its exit status and stderr.
        message: String,
    },

    /// The lab daemon did not become ready or did not answer.
    #[error("lab daemon: {0}")]
    Daemon(String),

    /// Override-write counting is not reliable for this host (inotify was
    /// unavailable or its queue overflowed); read the file instead.
    #[error("override writes of {0} were not tracked reliably: {1}")]
    OverrideTracking(String, String),

    /// A filesystem or socket operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the lab was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl LabError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        LabError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Attaches a context to io errors.
pub(crate) trait IoContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, LabError>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, LabError> {
        self.map_err(|e| LabError::io(context(), e))
    }
}
