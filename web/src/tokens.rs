//! The token the web server asks the mesh's read queries with. The server
//! never holds the signing key: a process that answers HTTP must not be
//! able to mint tokens.

use std::path::PathBuf;

/// Where the server's own token comes from.
pub enum TokenSource {
    /// A token given to the server; when it expires, answers say so.
    Fixed(String),
    /// The token in this file, read at each use, so a token renewed on disk
    /// (`fleetroll up` renews `<data-dir>/web.token`; `fleetroll auth issue
    /// --out` writes one) is used at once, without a restart.
    File(PathBuf),
}

/// The server has no token to ask with.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read the web server's token {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the web server's token file {path} is empty")]
    Empty { path: PathBuf },
}

impl TokenSource {
    /// The token to ask with now.
    pub fn token(&self) -> Result<String, TokenError> {
        match self {
            TokenSource::Fixed(token) => Ok(token.clone()),
            TokenSource::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
                    path: path.clone(),
                    source,
                })?;
                let token = text.trim();
                if token.is_empty() {
                    return Err(TokenError::Empty { path: path.clone() });
                }
                Ok(token.to_string())
            }
        }
    }
}
