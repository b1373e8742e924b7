//! The plan's rules, one decision at a time.

use super::*;

fn plan(chunks: usize, sources: &[(&str, bool)]) -> Plan {
    let sources = sources.iter().map(|(u, o)| (u.to_string(), *o)).collect();
    Plan::new(chunks, |_| false, sources, Duration::from_secs(10))
}

fn run(p: Pick) -> (usize, usize, usize) {
    match p {
        Pick::Run {
            source,
            first,
            count,
        } => (source, first, count),
        other => panic!("expected a run, got {other:?}"),
    }
}

#[test]
fn the_origin_alone_is_asked_for_long_runs_until_all_is_in() {
    let mut p = plan(40, &[("o", true)]);
    let now = Instant::now();
    let (s, first, count) = run(p.pick(now));
    assert_eq!((s, count), (0, ORIGIN_RUN.min(40 - first)));
    let (_, first2, count2) = run(p.pick(now));
    assert!(
        first2 >= first + count || first2 + count2 <= first,
        "no chunk asked twice: {first}+{count}, {first2}+{count2}"
    );
    // Two requests at once is the cap.
    assert_eq!(p.pick(now), Pick::Wait);
    for i in first..first + count {
        p.chunk_done(0, i, 1, now);
    }
    p.finish_run(0, first, count, None);
    assert_eq!(p.done(), count);
}

#[test]
fn the_origin_leaves_to_peers_what_they_hold_and_takes_it_back_when_they_drop() {
    let mut p = plan(8, &[("o", true), ("peer", false)]);
    let now = Instant::now();
    // A peer's list is asked for first.
    assert_eq!(p.pick(now), Pick::Have(1));
    let have = vec![true, true, true, true, false, false, false, false];
    p.finish_have(1, Ok((have, vec![false; 8])));
    let mut asked = Vec::new();
    while let Pick::Run {
        source,
        first,
        count,
    } = p.pick(now)
    {
        asked.push((source, first, count));
    }
    let origin: Vec<_> = asked.iter().filter(|a| a.0 == 0).collect();
    assert!(
        origin.iter().all(|a| a.1 >= 4 && a.1 + a.2 <= 8),
        "origin asked only for chunks no peer holds: {asked:?}"
    );
    let peer: Vec<_> = asked.iter().filter(|a| a.0 == 1).copied().collect();
    assert!(!peer.is_empty() && peer.iter().all(|a| a.1 + a.2 <= 4));
    // The peer sends a bad chunk: dropped, its chunks back to missing
    // and now the origin's.
    let (_, first, count) = peer[0];
    p.finish_run(1, first, count, Some(Failure::BadChunk("bad chunk".into())));
    for (s, f, c) in asked.iter().filter(|a| a.0 == 0) {
        p.finish_run(*s, *f, *c, Some(Failure::Again("cut".into())));
    }
    let (s, f, _) = run(p.pick(now));
    assert_eq!(s, 0);
    assert!(f < 8);
    assert!(p.sources[1].dropped.is_some());
    assert_eq!(p.bad_chunks, 1);
}

#[test]
fn the_origin_waits_for_the_first_answer_of_peers_not_for_failed_ones() {
    let mut p = plan(8, &[("o", true), ("peer", false)]);
    let now = Instant::now();
    assert_eq!(p.pick(now), Pick::Have(1));
    assert_eq!(p.pick(now), Pick::Wait, "the peer may hold it all");
    // Past the grace, the origin goes ahead anyway.
    assert!(matches!(
        p.pick(now + HAVE_GRACE),
        Pick::Run { source: 0, .. }
    ));
    let mut p = plan(8, &[("o", true), ("peer", false)]);
    assert_eq!(p.pick(now), Pick::Have(1));
    p.finish_have(1, Err(Failure::Again("refused".into())));
    assert!(matches!(p.pick(now), Pick::Run { source: 0, .. }));
}

#[test]
fn the_origin_is_not_asked_for_what_a_peer_is_fetching() {
    let mut p = plan(4, &[("o", true), ("peer", false)]);
    let now = Instant::now();
    assert_eq!(p.pick(now), Pick::Have(1));
    let coming = vec![true, true, false, true];
    p.finish_have(1, Ok((vec![false; 4], coming)));
    let (s, first, count) = run(p.pick(now));
    assert_eq!((s, first, count), (0, 2, 1));
    // One request at a time to the origin with a peer about; nothing
    // else it may be asked for.
    assert_eq!(p.pick(now), Pick::Wait);
}

#[test]
fn peers_are_asked_for_the_rarest_chunks_first() {
    let mut p = plan(4, &[("a", false), ("b", false)]);
    let now = Instant::now();
    let asked: Vec<Pick> = (0..2).map(|_| p.pick(now)).collect();
    for pick in asked {
        let Pick::Have(s) = pick else {
            panic!("{pick:?}")
        };
        let have = if s == 0 {
            vec![true, true, true, true]
        } else {
            vec![true, true, true, false]
        };
        p.finish_have(s, Ok((have, vec![false; 4])));
    }
    // Chunk 3 is held by "a" alone: a's first request starts there.
    for _ in 0..4 {
        if let Pick::Run {
            source: 0, first, ..
        } = p.pick(now)
        {
            assert_eq!(first, 3);
            return;
        }
    }
    panic!("a was never asked");
}

#[test]
fn a_download_with_no_live_source_left_is_stuck_not_waiting() {
    let mut p = plan(2, &[("o", true)]);
    let now = Instant::now();
    for _ in 0..MAX_FAILURES {
        let (s, f, c) = run(p.pick(now));
        p.finish_run(s, f, c, Some(Failure::Again("refused".into())));
    }
    match p.pick(now) {
        Pick::Stuck(why) => assert!(why.contains("refused"), "{why}"),
        other => panic!("{other:?}"),
    }
    // Peers that hold nothing this download needs: stuck after the
    // patience, waiting before.
    let mut p = Plan::new(
        1,
        |_| false,
        vec![("p".into(), false)],
        Duration::from_millis(0),
    );
    assert_eq!(p.pick(now), Pick::Have(0));
    p.finish_have(0, Ok((vec![false], vec![false])));
    assert!(matches!(p.pick(Instant::now()), Pick::Stuck(_)));
}

#[test]
fn a_peer_that_keeps_failing_rests_its_chunks_go_to_the_origin_and_it_comes_back() {
    let mut p = plan(4, &[("o", true), ("peer", false)]);
    let now = Instant::now();
    assert_eq!(p.pick(now), Pick::Have(1));
    p.finish_have(1, Ok((vec![true; 4], vec![false; 4])));
    for _ in 0..MAX_FAILURES {
        let (s, f, c) = loop {
            match p.pick(now) {
                Pick::Run {
                    source: 1,
                    first,
                    count,
                } => break (1, first, count),
                Pick::Run {
                    source,
                    first,
                    count,
                } => p.finish_run(source, first, count, Some(Failure::Again("slow".into()))),
                other => panic!("{other:?}"),
            }
        };
        p.finish_run(s, f, c, Some(Failure::Again("timed out".into())));
    }
    // Resting: not dropped, its chunks are the origin's meanwhile.
    assert!(p.sources[1].dropped.is_none());
    assert!(matches!(p.pick(now), Pick::Run { source: 0, .. }));
    // Back after the rest, its list asked for again.
    let later = Instant::now() + REST + Duration::from_secs(1);
    assert_eq!(p.pick(later), Pick::Have(1));
}
