use std::collections::BTreeSet;

use proptest::prelude::*;

use super::{DEFAULT_PARTITIONS, MAX_STRIPES, Placement, PlacementError, partition};

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Each partition's node names, stripe by stripe.
fn by_name<'a>(placement: &Placement, nodes: &'a [String]) -> Vec<Vec<&'a str>> {
    placement.table.chunks(placement.stripes).map(|row| row.iter().map(|&i| nodes[i].as_str()).collect()).collect()
}

/// The assignments (partition, stripe) that moved from one placement to the other, not counting those on `gone`
/// before or on `new` after.
fn moved(before: &[Vec<&str>], after: &[Vec<&str>], gone: Option<&str>, new: Option<&str>) -> (usize, usize) {
    let mut moved = 0;
    let mut total = 0;
    for (a, b) in before.iter().zip(after) {
        for (x, y) in a.iter().zip(b) {
            total += 1;
            if x != y && Some(*x) != gone && Some(*y) != new {
                moved += 1;
            }
        }
    }
    (moved, total)
}

/// Checks what holds of every placement: shape, distinctness, loads (sum, bound, agreement with the table).
fn invariants(placement: &Placement, nodes: &[String]) -> Result<(), TestCaseError> {
    let distinct: BTreeSet<&String> = nodes.iter().collect();
    let stripes = placement.stripes;
    prop_assert_eq!(placement.table.len(), if nodes.is_empty() { 0 } else { placement.partitions * stripes });
    let mut counted = vec![0u64; nodes.len()];
    for row in placement.table.chunks(stripes) {
        prop_assert!(row.iter().all(|&i| i < nodes.len()));
        let unique: BTreeSet<&String> = row.iter().map(|&i| &nodes[i]).collect();
        prop_assert_eq!(unique.len(), stripes.min(distinct.len()), "{:?}", row);
        for &i in row {
            counted[i] += 1;
            // Only a name's first position is answered.
            prop_assert_eq!(nodes.iter().position(|n| *n == nodes[i]), Some(i));
        }
    }
    let loads = placement.loads();
    prop_assert_eq!(&loads, &counted);
    prop_assert!(loads.iter().all(|&l| l <= placement.bound()), "loads {:?} bound {}", loads, placement.bound());
    Ok(())
}

#[test]
fn no_nodes_no_stripes() {
    let placement = Placement::new(&[], 5).unwrap();
    assert_eq!(placement.nodes(&[7; 32]), &[] as &[usize]);
    assert!(placement.loads().is_empty());
}

#[test]
fn bad_parameters_are_refused() {
    let nodes = names(&["a", "b"]);
    assert_eq!(Placement::new(&nodes, 0).unwrap_err(), PlacementError::Stripes(0));
    assert_eq!(Placement::new(&nodes, MAX_STRIPES + 1).unwrap_err(), PlacementError::Stripes(MAX_STRIPES + 1));
    assert_eq!(Placement::with_bounds(&nodes, 5, 0.25, 0).unwrap_err(), PlacementError::Partitions(0));
    let too_many = Placement::with_bounds(&nodes, 5, 0.25, usize::MAX).unwrap_err();
    assert_eq!(too_many, PlacementError::Partitions(usize::MAX));
    for epsilon in [-0.1, f64::INFINITY, f64::NAN] {
        let err = Placement::with_bounds(&nodes, 5, epsilon, 16).unwrap_err();
        assert!(matches!(err, PlacementError::Epsilon(_)), "{epsilon}");
        assert!(err.to_string().contains("epsilon"));
    }
}

#[test]
fn fewer_nodes_than_stripes_wrap() {
    let one = names(&["only"]);
    let placement = Placement::new(&one, 5).unwrap();
    assert_eq!(placement.nodes(&[0; 32]), &[0, 0, 0, 0, 0]);
    assert_eq!(placement.loads(), vec![5 * DEFAULT_PARTITIONS as u64]);
    let two = names(&["a", "b"]);
    let placement = Placement::new(&two, 5).unwrap();
    for row in placement.table.chunks(5) {
        let on_a = row.iter().filter(|&&i| i == 0).count();
        assert!(on_a == 2 || on_a == 3, "{row:?}");
        // Each round of stripes uses every node once.
        assert_ne!(row[0], row[1]);
        assert_ne!(row[2], row[3]);
    }
    assert!(placement.loads().iter().all(|&l| l <= placement.bound()));
}

/// No slack and few nodes to choose from: stripes move off full nodes, and the bound still holds.
#[test]
fn the_bound_holds_without_slack() {
    for stripes in 2..=5 {
        for n in stripes..stripes + 4 {
            let nodes: Vec<String> = (0..n).map(|i| format!("{stripes}-{i}")).collect();
            let placement = Placement::with_bounds(&nodes, stripes, 0.0, DEFAULT_PARTITIONS).unwrap();
            invariants(&placement, &nodes).unwrap();
        }
    }
}

#[test]
fn a_name_given_twice_counts_once() {
    let nodes = names(&["b", "a", "b", "c"]);
    let placement = Placement::with_bounds(&nodes, 3, 0.25, 256).unwrap();
    let loads = placement.loads();
    assert_eq!(loads[2], 0);
    assert_eq!(loads.iter().sum::<u64>(), 3 * 256);
    let once = names(&["a", "b", "c"]);
    let plain = Placement::with_bounds(&once, 3, 0.25, 256).unwrap();
    assert_eq!(by_name(&placement, &nodes), by_name(&plain, &once));
}

#[test]
fn keys_pick_partitions_by_their_first_bytes() {
    let mut key = [0xff; 32];
    assert_eq!(partition(&key, 4096), 4095);
    key[..8].copy_from_slice(&0u64.to_be_bytes());
    assert_eq!(partition(&key, 4096), 0);
    key[..8].copy_from_slice(&(1u64 << 52).to_be_bytes());
    assert_eq!(partition(&key, 4096), 1);
    assert_eq!(partition(&key, 1), 0);
    let nodes = names(&["a", "b", "c", "d", "e", "f"]);
    let placement = Placement::new(&nodes, 5).unwrap();
    assert_eq!(placement.nodes(&key), &placement.table[5..10]);
}

/// The placements are the same across runs and machines: a change here moves every cached stripe.
#[test]
fn placement_is_stable() {
    let nodes = names(&["cache-0:7000", "cache-1:7000", "cache-2:7000", "cache-3:7000", "cache-4:7000"]);
    let placement = Placement::new(&nodes, 5).unwrap();
    assert_eq!(placement.loads(), vec![4096; 5]);
    let some: Vec<&[usize]> = [[0; 32], [0x80; 32], [0x3c; 32]].iter().map(|key| placement.nodes(key)).collect();
    assert_eq!(some, [[0, 2, 4, 3, 1], [1, 2, 4, 0, 3], [3, 4, 2, 0, 1]]);
}

fn node_lists() -> impl Strategy<Value = Vec<String>> {
    prop::collection::btree_set("[a-z0-9.:-]{1,12}", 0..24).prop_map(|set| set.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn placements_keep_their_invariants(
        nodes in node_lists(),
        stripes in 1usize..=6,
        epsilon in 0.0f64..1.0,
        partitions in 1usize..=512,
    ) {
        let placement = Placement::with_bounds(&nodes, stripes, epsilon, partitions).unwrap();
        invariants(&placement, &nodes)?;
    }

    #[test]
    fn one_node_more_or_less_moves_a_bounded_fraction(nodes in node_lists(), stripes in 1usize..=5) {
        prop_assume!(nodes.len() > stripes);
        let (others, share) = churn(&nodes, stripes, 512);
        prop_assert!(others <= 1.5 * share, "{:.3} of the others moved, {:.3} were on the node", others, share);
    }

    #[test]
    fn the_order_of_the_nodes_does_not_matter(
        nodes in node_lists(),
        seed in any::<u64>(),
        stripes in 1usize..=6,
        keys in prop::collection::vec(any::<[u8; 32]>(), 1..20),
    ) {
        let mut shuffled = nodes.clone();
        // A permutation from the seed (Fisher-Yates with a multiplicative generator).
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            shuffled.swap(i, (x >> 33) as usize % (i + 1));
        }
        let a = Placement::with_bounds(&nodes, stripes, 0.25, 512).unwrap();
        let b = Placement::with_bounds(&shuffled, stripes, 0.25, 512).unwrap();
        prop_assert_eq!(by_name(&a, &nodes), by_name(&b, &shuffled));
        for key in &keys {
            let on_a: Vec<&String> = a.nodes(key).iter().map(|&i| &nodes[i]).collect();
            let on_b: Vec<&String> = b.nodes(key).iter().map(|&i| &shuffled[i]).collect();
            prop_assert_eq!(on_a, on_b);
        }
    }
}

/// Removing (then adding) one node of `nodes`: the fraction of all assignments that moved though neither on the
/// removed node nor onto the added one, and the fraction that were on it.
fn churn(nodes: &[String], stripes: usize, partitions: usize) -> (f64, f64) {
    let base = Placement::with_bounds(nodes, stripes, 0.25, partitions).unwrap();
    let fewer = Placement::with_bounds(&nodes[1..], stripes, 0.25, partitions).unwrap();
    let before = by_name(&base, nodes);
    let (others, total) = moved(&before, &by_name(&fewer, &nodes[1..]), Some(&nodes[0]), None);
    let (back, _) = moved(&by_name(&fewer, &nodes[1..]), &before, None, Some(&nodes[0]));
    let share = base.loads()[0] as f64 / total as f64;
    (others.max(back) as f64 / total as f64, share)
}

#[test]
fn one_node_more_or_less_moves_little_else() {
    for (n, most) in [(6, 0.15), (10, 0.04), (20, 0.01), (40, 0.005)] {
        let nodes: Vec<String> = (0..n).map(|i| format!("cache-{i}:7000")).collect();
        let (others, share) = churn(&nodes, 5, DEFAULT_PARTITIONS);
        println!("{n} nodes: {share:.3} of the stripes on the node, {others:.3} others moved");
        assert!(others <= most, "{n} nodes: {others:.3} of the others moved");
    }
}
