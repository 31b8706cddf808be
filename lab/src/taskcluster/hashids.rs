//! Continuation tokens as Taskcluster makes them: the page offset encoded
//! with Hashids (salt `"salt"`, at least 10 characters, the default
//! alphabet), so the double's tokens look like, and decode like, the real
//! ones (`paginateResults` in Taskcluster's lib-api).

const ALPHABET: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ1234567890";
const SEPS: &str = "cfhistuCFHISTU";
const SALT: &str = "salt";
const MIN_LENGTH: usize = 10;

/// A token with characters Hashids never produces: the real API answers
/// 400 `InputError` for those.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BadToken;

struct Codec {
    alphabet: Vec<char>,
    seps: Vec<char>,
    guards: Vec<char>,
    salt: Vec<char>,
}

fn shuffle(chars: &[char], salt: &[char]) -> Vec<char> {
    let mut out = chars.to_vec();
    if salt.is_empty() {
        return out;
    }
    let mut p = 0usize;
    for (v, i) in (1..out.len()).rev().enumerate() {
        let integer = salt[v % salt.len()] as usize;
        p += integer;
        let j = (integer + v % salt.len() + p) % i;
        out.swap(i, j);
    }
    out
}

fn to_alphabet(mut n: u64, alphabet: &[char]) -> Vec<char> {
    let len = alphabet.len() as u64;
    let mut out = Vec::new();
    loop {
        out.push(alphabet[(n % len) as usize]);
        n /= len;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    out
}

impl Codec {
    fn new() -> Codec {
        let salt: Vec<char> = SALT.chars().collect();
        let seps_in: Vec<char> = SEPS.chars().collect();
        let mut alphabet: Vec<char> = ALPHABET.chars().filter(|c| !seps_in.contains(c)).collect();
        let mut seps = shuffle(
            &seps_in
                .iter()
                .copied()
                .filter(|c| ALPHABET.contains(*c))
                .collect::<Vec<_>>(),
            &salt,
        );
        if seps.is_empty() || alphabet.len() as f64 / seps.len() as f64 > 3.5 {
            let want = (alphabet.len() as f64 / 3.5).ceil() as usize;
            if want > seps.len() {
                let diff = want - seps.len();
                seps.extend(alphabet.drain(..diff));
            }
        }
        let mut alphabet = shuffle(&alphabet, &salt);
        let guard_count = (alphabet.len() as f64 / 12.0).ceil() as usize;
        let guards = if alphabet.len() < 3 {
            seps.drain(..guard_count).collect()
        } else {
            alphabet.drain(..guard_count).collect()
        };
        Codec {
            alphabet,
            seps,
            guards,
            salt,
        }
    }

    fn encode(&self, numbers: &[u64]) -> String {
        let id_int: u64 = numbers
            .iter()
            .enumerate()
            .map(|(i, n)| n % (i as u64 + 100))
            .sum();
        let mut alphabet = self.alphabet.clone();
        let lottery = alphabet[(id_int % alphabet.len() as u64) as usize];
        let mut ret = vec![lottery];
        for (i, &n) in numbers.iter().enumerate() {
            let mut buffer = vec![lottery];
            buffer.extend(&self.salt);
            buffer.extend(&alphabet);
            alphabet = shuffle(&alphabet, &buffer);
            let last = to_alphabet(n, &alphabet);
            if i + 1 < numbers.len() {
                let code = last[0] as u64 + i as u64;
                ret.extend(&last);
                ret.push(self.seps[((n % code) % self.seps.len() as u64) as usize]);
            } else {
                ret.extend(&last);
            }
        }
        let guards = self.guards.len() as u64;
        if ret.len() < MIN_LENGTH {
            let g = (id_int + ret[0] as u64) % guards;
            ret.insert(0, self.guards[g as usize]);
            if ret.len() < MIN_LENGTH {
                let g = (id_int + ret[2] as u64) % guards;
                ret.push(self.guards[g as usize]);
            }
        }
        let half = alphabet.len() / 2;
        while ret.len() < MIN_LENGTH {
            alphabet = shuffle(&alphabet, &alphabet);
            let mut grown = alphabet[half..].to_vec();
            grown.extend(&ret);
            grown.extend(&alphabet[..half]);
            ret = grown;
            let excess = ret.len().saturating_sub(MIN_LENGTH);
            if excess > 0 {
                let from = excess / 2;
                ret = ret[from..from + MIN_LENGTH].to_vec();
            }
        }
        ret.into_iter().collect()
    }

    fn decode(&self, id: &str) -> Result<Vec<u64>, BadToken> {
        if id.is_empty() {
            return Ok(Vec::new());
        }
        let known = |c: &char| {
            self.alphabet.contains(c) || self.guards.contains(c) || self.seps.contains(c)
        };
        if !id.chars().all(|c| known(&c)) {
            return Err(BadToken);
        }
        let parts: Vec<&str> = id.split(|c| self.guards.contains(&c)).collect();
        let breakdown = parts[if matches!(parts.len(), 2 | 3) { 1 } else { 0 }];
        let mut chars = breakdown.chars();
        let Some(lottery) = chars.next() else {
            return Ok(Vec::new());
        };
        let rest: String = chars.collect();
        let mut alphabet = self.alphabet.clone();
        let mut out = Vec::new();
        for sub in rest.split(|c| self.seps.contains(&c)) {
            let mut buffer = vec![lottery];
            buffer.extend(&self.salt);
            buffer.extend(&alphabet);
            buffer.truncate(alphabet.len());
            alphabet = shuffle(&alphabet, &buffer);
            let mut n: u64 = 0;
            for c in sub.chars() {
                let index = alphabet.iter().position(|a| *a == c).ok_or(BadToken)?;
                n = n
                    .saturating_mul(alphabet.len() as u64)
                    .saturating_add(index as u64);
            }
            out.push(n);
        }
        // Hashids answers nothing for ids it would not have produced.
        if self.encode(&out) != id {
            return Ok(Vec::new());
        }
        Ok(out)
    }
}

/// The token for the page starting at `offset`; none for offset 0, as the
/// real API never sends one for the first page.
pub(crate) fn encode_offset(offset: u64) -> Option<String> {
    (offset != 0).then(|| Codec::new().encode(&[offset]))
}

/// The offset a token stands for; a token Hashids cannot read means 0.
pub(crate) fn decode_offset(token: &str) -> Result<u64, BadToken> {
    Ok(Codec::new().decode(token)?.first().copied().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_javascript_hashids() {
        // hashids 2.3.0: new Hashids("salt", 10).encode(n)
        for (n, want) in [
            (1, "qzxkXG8ZWa"),
            (2, "jGzmdv8vpK"),
            (10, "Ovx31Wk9Po"),
            (100, "xa63O6jmq4"),
            (999, "QLdkrMl8M2"),
            (1000, "xa63Olw8q4"),
            (2000, "a63Oqqakq4"),
            (123_456, "Rz37E1dXkB"),
            (4_294_967_296, "V8LbYLElMm"),
        ] {
            assert_eq!(encode_offset(n).as_deref(), Some(want), "{n}");
            assert_eq!(decode_offset(want), Ok(n));
        }
        assert_eq!(encode_offset(0), None);
        assert_eq!(decode_offset(""), Ok(0));
        assert_eq!(decode_offset("xx"), Ok(0));
        assert_eq!(decode_offset("!!"), Err(BadToken));
    }
}
