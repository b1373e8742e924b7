//! `phase-discover --watch`: every valid provider of a channel/arch, looked
//! up again and again on one DHT session, each with whether what it serves
//! verifies. On a terminal the table is redrawn in place; otherwise each
//! round is printed as plain lines (or one JSON array) for logs and scripts.
//!
//! Finding records is the session's job and deciding about releases
//! `choose`'s; this module only runs rounds and prints them. It never
//! downloads artifacts and never moves a rollback floor.

use std::io::{IsTerminal, Write};

use crate::record::{ManifestRecord, MAX_RECORD_BYTES};
use crate::text::printable;

use super::{DiscoverError, Query, Session};

/// One provider as a round saw it.
struct Row {
    record: ManifestRecord,
    /// Seconds since the record was put.
    age: u64,
    /// The verified release number (with release keys), else the record's
    /// own hint.
    release_seq: Option<u64>,
    /// Whether its manifest verifies.
    ok: bool,
    /// What was checked, or why it is refused.
    state: String,
}

/// Runs rounds until the process is interrupted, or the DHT fails.
/// `json` prints one JSON array per round instead of a table or lines.
pub fn run(query: &Query, json: bool, interval: std::time::Duration) -> Result<(), DiscoverError> {
    let session = Session::start(query)?;
    let terminal = std::io::stdout().is_terminal();
    loop {
        let records = session.lookup(query)?;
        // The checks download manifests (blocking HTTP): done off the
        // runtime while it keeps serving the DHT connections.
        let check = query.clone();
        let rows = session.run_blocking(move || verify(records, &check));
        let out = match (json, terminal) {
            (true, _) => json_rows(&rows),
            (false, true) => table(query, &rows, interval),
            (false, false) => lines(&rows),
        };
        let mut stdout = std::io::stdout().lock();
        // A closed pipe (`| head`) ends the watch.
        if stdout
            .write_all(out.as_bytes())
            .and_then(|()| stdout.flush())
            .is_err()
        {
            break;
        }
        drop(stdout);
        session.pause(interval);
    }
    session.stop();
    Ok(())
}

/// Checks what each record points at: against the release keys when there
/// are any (as a board would), else against the record's manifest hash.
/// One record at a time: two publishers may advertise the same URL, and
/// each gets its own verdict.
fn verify(records: Vec<ManifestRecord>, query: &Query) -> Vec<Row> {
    let now = crate::time::unix_now();
    records
        .into_iter()
        .map(|r| {
            let (release_seq, ok, state) = if query.release_keys.is_empty() {
                match query.check(&r) {
                    Ok(_) => (r.release_seq, true, "manifest matches the record".into()),
                    Err(e) => (r.release_seq, false, e.to_string()),
                }
            } else {
                let choice = super::choose::releases(std::slice::from_ref(&r), query, None);
                match (
                    choice.accepted.first().and_then(|c| c.release.as_ref()),
                    choice.refused.first(),
                ) {
                    (Some(rel), _) => (
                        Some(rel.release_seq),
                        true,
                        format!("release verified (key {})", rel.key_id),
                    ),
                    (None, Some((_, why))) => (r.release_seq, false, why.clone()),
                    (None, None) => (r.release_seq, false, "not checked".into()),
                }
            };
            Row {
                age: now.saturating_sub(r.updated_at()),
                release_seq,
                ok,
                state,
                record: r,
            }
        })
        .collect()
}

/// The live table: cleared and redrawn each round.
fn table(query: &Query, rows: &[Row], interval: std::time::Duration) -> String {
    let mut out = format!(
        "\x1b[H\x1b[2Jphase-discover --watch {}/{}: {} provider(s), {} verified, at {} (every {} s, Ctrl-C to stop)\n\n",
        query.channel,
        query.arch,
        rows.len(),
        rows.iter().filter(|r| r.ok).count(),
        crate::time::rfc3339_secs(crate::time::unix_now()),
        interval.as_secs()
    );
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                printable(&r.record.url),
                printable(&publisher(&r.record)),
                printable(&r.record.version),
                r.release_seq.map_or_else(|| "-".into(), |n| n.to_string()),
                format!("{} s", r.age),
                printable(&format!(
                    "{}{}",
                    if r.ok { "ok: " } else { "REFUSED: " },
                    r.state
                )),
            ]
        })
        .collect();
    let head = ["URL", "PUBLISHER", "VERSION", "RELEASE_SEQ", "AGE", "STATE"];
    let mut width = head.map(|h| h.chars().count());
    for row in &cells {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: [&str; 6]| {
        let mut l = String::new();
        for (i, c) in cols.iter().enumerate() {
            if i == 5 {
                l.push_str(c);
            } else {
                l.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        l.push('\n');
        l
    };
    out.push_str(&line(head));
    for row in &cells {
        out.push_str(&line(row.each_ref().map(String::as_str)));
    }
    if rows.is_empty() {
        out.push_str("(no provider found in this round)\n");
    }
    out
}

/// Plain lines, one per provider, each starting with the round's time;
/// `none` when a round found nobody.
fn lines(rows: &[Row]) -> String {
    let at = crate::time::rfc3339_secs(crate::time::unix_now());
    if rows.is_empty() {
        return format!("{at} none\n");
    }
    rows.iter()
        .map(|r| {
            format!(
                "{at} {} {} {} {} {}s {} {}\n",
                printable(&r.record.url),
                printable(&r.record.peer_id),
                printable(&r.record.version),
                r.release_seq.map_or_else(|| "-".into(), |n| n.to_string()),
                r.age,
                if r.ok { "ok" } else { "refused" },
                printable(&r.state)
            )
        })
        .collect()
}

/// One JSON array per round: each record with `age_seconds`, `ok` and
/// `state` added.
fn json_rows(rows: &[Row]) -> String {
    #[derive(serde::Serialize)]
    struct JsonRow<'a> {
        #[serde(flatten)]
        record: &'a ManifestRecord,
        age_seconds: u64,
        ok: bool,
        state: String,
    }
    let rows: Vec<JsonRow> = rows
        .iter()
        .map(|r| JsonRow {
            record: &r.record,
            age_seconds: r.age,
            ok: r.ok,
            state: printable(&r.state),
        })
        .collect();
    // Records are at most 2 KiB and states a line: this bound is never met
    // by a real round.
    let max = 64 * 1024 + rows.len() * (MAX_RECORD_BYTES + 4096);
    crate::text::to_json(&rows, max).unwrap_or_else(|| "[]".into()) + "\n"
}

/// The publisher, short enough for a table: the peer id's ends and the
/// provider's name if it gave one.
fn publisher(r: &ManifestRecord) -> String {
    let id = &r.peer_id;
    let short = if id.is_ascii() && id.len() > 16 {
        format!("{}…{}", &id[..8], &id[id.len() - 6..])
    } else {
        id.clone()
    };
    match &r.provider_name {
        Some(n) => format!("{short} ({n})"),
        None => short,
    }
}
