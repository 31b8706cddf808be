//! The role permissions of `nats-config/permissions.conf`, read from that
//! file itself: the password users of the embedded server and the user
//! JWTs of the auth callout get the same lists, written once.

use std::collections::BTreeMap;

use fleetroll_bus::token::{Claims, Role};

/// What one role may publish and subscribe to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    pub publish_allow: Vec<String>,
    pub publish_deny: Vec<String>,
    pub subscribe_allow: Vec<String>,
    pub allow_responses: bool,
}

impl Permissions {
    /// The permissions of one holder of `role`'s tokens: the role's own,
    /// with the role's inbox (`_INBOX_<role>.>`) narrowed to the holder's
    /// ([`Claims::inbox_prefix`]). Inboxes every holder shares (chatops'
    /// `_INBOX.>`, for stock clients) stay as they are.
    pub fn for_holder(&self, claims: &Claims) -> Permissions {
        let shared = format!("_INBOX_{}.>", claims.role);
        let own = format!("{}.>", claims.inbox_prefix());
        let mut permissions = self.clone();
        for subject in &mut permissions.subscribe_allow {
            if *subject == shared {
                subject.clone_from(&own);
            }
        }
        permissions
    }
}

/// permissions.conf does not say what it must.
#[derive(Debug, thiserror::Error)]
#[error("permissions.conf: {0}")]
pub struct PermissionsError(String);

/// The subset of the NATS configuration syntax permissions.conf is written
/// in: `NAME = value`, `key: value`, `{ }` maps, `[ ]` lists, quoted
/// strings, bare words, `$VARIABLES`, `#` comments.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Text(String),
    List(Vec<Value>),
    Map(BTreeMap<String, Value>),
}

struct Parser<'a> {
    tokens: Vec<&'a str>,
    at: usize,
}

fn tokenize(text: &str) -> Vec<&str> {
    let mut tokens = Vec::new();
    for line in text.lines() {
        let mut rest = line;
        loop {
            rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ',');
            let Some(first) = rest.chars().next() else {
                break;
            };
            if first == '#' {
                break;
            }
            let end = match first {
                '"' => rest[1..].find('"').map_or(rest.len(), |i| i + 2),
                '{' | '}' | '[' | ']' | '=' | ':' => 1,
                _ => rest
                    .find(|c: char| c.is_whitespace() || "{}[]=:,#".contains(c))
                    .unwrap_or(rest.len()),
            };
            tokens.push(&rest[..end]);
            rest = &rest[end..];
        }
    }
    tokens
}

impl Parser<'_> {
    fn next(&mut self) -> Option<&str> {
        let token = self.tokens.get(self.at).copied();
        self.at += 1;
        token
    }

    fn peek(&self) -> Option<&str> {
        self.tokens.get(self.at).copied()
    }

    fn value(&mut self) -> Result<Value, PermissionsError> {
        match self.next() {
            Some("{") => self.map_until("}").map(Value::Map),
            Some("[") => {
                let mut items = Vec::new();
                while self.peek() != Some("]") {
                    if self.peek().is_none() {
                        return Err(PermissionsError("a list is not closed".into()));
                    }
                    items.push(self.value()?);
                }
                self.next();
                Ok(Value::List(items))
            }
            Some(word) => Ok(Value::Text(word.trim_matches('"').to_string())),
            None => Err(PermissionsError("a value is missing".into())),
        }
    }

    /// `key: value` or `key = value` entries up to `end` (none: the end).
    fn map_until(&mut self, end: &str) -> Result<BTreeMap<String, Value>, PermissionsError> {
        let mut map = BTreeMap::new();
        loop {
            let key = match self.next() {
                Some(token) if token == end => return Ok(map),
                None if end.is_empty() => return Ok(map),
                None => return Err(PermissionsError(format!("`{end}` is missing"))),
                Some(key) => key.trim_matches('"').to_string(),
            };
            // `include ./x.conf`, `authorization { … }`: no separator.
            if matches!(self.peek(), Some(":") | Some("=")) {
                self.next();
            }
            let value = self.value()?;
            map.insert(key, value);
        }
    }
}

/// Every role's permissions, as permissions.conf gives them.
pub fn from_config(
    text: &str,
) -> Result<std::collections::HashMap<Role, Permissions>, PermissionsError> {
    let mut parser = Parser {
        tokens: tokenize(text),
        at: 0,
    };
    let top = parser.map_until("")?;
    let Some(Value::Map(authorization)) = top.get("authorization") else {
        return Err(PermissionsError("no `authorization` block".into()));
    };
    let resolve = |value: &Value| -> Result<Vec<String>, PermissionsError> {
        let list = match value {
            Value::Text(name) if name.starts_with('$') => authorization
                .get(&name[1..])
                .ok_or_else(|| PermissionsError(format!("`{name}` is not defined")))?,
            other => other,
        };
        match list {
            Value::List(items) => items
                .iter()
                .map(|item| match item {
                    Value::Text(subject) => Ok(subject.clone()),
                    _ => Err(PermissionsError(
                        "a subject list holds a non-subject".into(),
                    )),
                })
                .collect(),
            _ => Err(PermissionsError("a subject list is not a list".into())),
        }
    };
    let lists = |map: &BTreeMap<String, Value>,
                 key: &str|
     -> Result<(Vec<String>, Vec<String>), PermissionsError> {
        let Some(Value::Map(section)) = map.get(key) else {
            return Ok((Vec::new(), Vec::new()));
        };
        let get = |name: &str| {
            section
                .get(name)
                .map(resolve)
                .transpose()
                .map(Option::unwrap_or_default)
        };
        Ok((get("allow")?, get("deny")?))
    };
    let mut roles = std::collections::HashMap::new();
    for role in Role::ALL {
        let name = role.as_str().to_ascii_uppercase();
        let Some(Value::Map(block)) = authorization.get(&name) else {
            return Err(PermissionsError(format!("no `{name}` permissions")));
        };
        let (publish_allow, publish_deny) = lists(block, "publish")?;
        let (subscribe_allow, _) = lists(block, "subscribe")?;
        roles.insert(
            role,
            Permissions {
                publish_allow,
                publish_deny,
                subscribe_allow,
                allow_responses: block.get("allow_responses") == Some(&Value::Text("true".into())),
            },
        );
    }
    Ok(roles)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(actor: &str, role: Role) -> Claims {
        Claims {
            sub: actor.into(),
            role,
            jti: "j".into(),
            iss: "fleetroll".into(),
            iat: 0,
            exp: 1,
            cnf: None,
        }
    }

    /// Each holder subscribes to its own inbox, not its role's: alice's
    /// permissions do not cover bob's replies, nor the role-wide prefix.
    #[test]
    fn each_holder_gets_its_own_inbox() {
        let roles = from_config(fleetroll_nats_config::PERMISSIONS).unwrap();
        let relops = &roles[&Role::Relops];
        let alice = relops.for_holder(&claims("alice", Role::Relops));
        let bob = relops.for_holder(&claims("bob", Role::Relops));
        assert_eq!(alice.subscribe_allow[0], "_INBOX_relops_616c696365.>");
        assert_eq!(bob.subscribe_allow[0], "_INBOX_relops_626f62.>");
        assert!(!alice.subscribe_allow.contains(&"_INBOX_relops.>".into()));
        // Everything else is the role's.
        assert_eq!(alice.subscribe_allow[1..], relops.subscribe_allow[1..]);
        assert_eq!(alice.publish_allow, relops.publish_allow);
        // An actor whose name holds subject syntax stays in one token.
        let dotted = relops.for_holder(&claims("a.*>", Role::Relops));
        assert_eq!(dotted.subscribe_allow[0], "_INBOX_relops_612e2a3e.>");
        // Chatops keeps the shared `_INBOX.>` stock clients use.
        let bot = roles[&Role::Chatops].for_holder(&claims("bot", Role::Chatops));
        assert!(bot.subscribe_allow.contains(&"_INBOX.>".into()));
        assert!(
            bot.subscribe_allow
                .contains(&"_INBOX_chatops_626f74.>".into())
        );
    }

    /// The shipped file reads as the roles it describes.
    #[test]
    fn the_shipped_permissions_read_as_their_roles() {
        let roles = from_config(fleetroll_nats_config::PERMISSIONS).unwrap();
        let relops = &roles[&Role::Relops];
        assert!(
            relops
                .publish_allow
                .contains(&"fleetroll.cmd.>".to_string())
        );
        assert!(relops.publish_allow.len() > 50, "{relops:?}");
        assert!(
            relops
                .publish_deny
                .contains(&"fleetroll.audit.>".to_string())
        );
        assert_eq!(relops.subscribe_allow[0], "_INBOX_relops.>");
        let readonly = &roles[&Role::Readonly];
        assert!(
            readonly
                .publish_deny
                .contains(&"fleetroll.cmd.>".to_string())
        );
        assert_eq!(roles[&Role::Chatops].publish_allow, ["fleetroll.query.>"]);
        let worker = &roles[&Role::Worker];
        assert!(worker.allow_responses && !relops.allow_responses);
        assert!(
            worker
                .publish_deny
                .contains(&"$KV.fleetroll_auth.>".to_string())
        );
    }
}
