//! Architecture-level ("scalar") expressions: the second level of evolved
//! proxies, whose terminals are numbers of a whole architecture rather
//! than per-layer tensors.
//!
//! A [`ScalarExpr`] combines, with protected unary operators (log, sqrt,
//! neg, abs, square, inv, exp clipped, relu) and binary ones (add, sub,
//! mul, div, max, min), two kinds of [`Terminal`]:
//! - the score of a standard proxy ([`ProxyKind`]: grad_norm … flops, each
//!   with the crate's orientation, higher = better), computed once per
//!   architecture on the same minibatch and seed ([`scalar_inputs`]);
//! - a per-layer expression `AGG_layers(RED(TENSOR))`
//!   ([`crate::evolve::Expression`]), the first level, as one number.
//!
//! Kendall τ is invariant under monotone transforms, so a lone proxy under
//! `log` or `sqrt` ranks as the proxy does: what this level adds is
//! combinations (e.g. `sub(zen, log(params))`).
//!
//! This is *our* design, related to (not a reproduction of) the symbolic
//! regression over existing zero-cost proxies of Phan & Luong (arXiv
//! 2505.15832, `shared/research/proxies-splitting.md`): their terminals are
//! proxies only; ours also keep the per-layer expressions, and the search
//! is the same tournament evolution as the tensor level
//! ([`crate::evolve::Evolution`], through [`crate::evolve::Genome`]).
//!
//! Text form: proxies by name, per-layer expressions as they print,
//! operators as `name(a)` / `name(a, b)`, e.g.
//! `sub(zen, mul(log(params), max_layers(norm(dW))))`; it parses back.
//!
//! Degenerate proxy scores: a standard proxy scores a degenerate network
//! -∞ (the worst possible, e.g. NASWOT with a singular kernel, which
//! happens on 29–44% of the bundled tables' architectures). A
//! combination needs a number, so such a terminal reads as
//! [`DEGENERATE_TERMINAL`], a finite floor far below every real score: a
//! combination still ranks those architectures low instead of turning
//! the whole expression infinite (which would give the worst fitness to
//! every expression using that proxy). An expression whose score is NaN or
//! infinite still gets the worst fitness.

use crate::evolve::{
    self, layer_tensors, lower, Binary, ExprParser, Expression, ExpressionParseError, Genome,
    LayerTensors, Unary, UNARY,
};
use crate::{ProxyData, ProxyError, ProxyKind};
use nn_plan::ModelSpec;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::Rng;
use std::fmt;

/// What a proxy terminal reads when the proxy scored the network -∞
/// (degenerate). Below every score the standard proxies reach on the
/// bundled tables (the lowest, jacob_cov, is about -6e6), and small
/// enough that a square or a product stays finite in f64.
pub const DEGENERATE_TERMINAL: f64 = -1e12;

/// Binary operators of the architecture level.
pub const SCALAR_BINARY: [Binary; 6] = [
    Binary::Add,
    Binary::Sub,
    Binary::Mul,
    Binary::Div,
    Binary::Max,
    Binary::Min,
];

/// A number an architecture-level expression reads.
#[derive(Debug, Clone, PartialEq)]
pub enum Terminal {
    /// A standard proxy's score (higher = better).
    Proxy(ProxyKind),
    /// A per-layer expression's score.
    Layers(Expression),
}

/// An architecture-level expression (see the module doc).
#[derive(Debug, Clone, PartialEq)]
pub enum ScalarExpr {
    /// A proxy score or a per-layer expression.
    Terminal(Terminal),
    /// A protected function of one expression.
    Unary(Unary, Box<ScalarExpr>),
    /// A protected function of two expressions.
    Binary(Binary, Box<ScalarExpr>, Box<ScalarExpr>),
}

/// The standard proxies' scores of one architecture (absent: not
/// computed; an expression reading it scores NaN).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProxyScores {
    /// In [`ProxyKind::ALL`]'s order.
    values: [Option<f64>; ProxyKind::ALL.len()],
}

fn slot(kind: ProxyKind) -> usize {
    ProxyKind::ALL
        .iter()
        .position(|&k| k == kind)
        .expect("every kind is in ALL")
}

impl ProxyScores {
    /// Records `kind`'s score.
    pub fn set(&mut self, kind: ProxyKind, value: f64) {
        self.values[slot(kind)] = Some(value);
    }

    /// `kind`'s score, when computed.
    pub fn get(&self, kind: ProxyKind) -> Option<f64> {
        self.values[slot(kind)]
    }
}

/// What an architecture-level expression reads of one architecture.
#[derive(Debug, Clone, Default)]
pub struct ScalarInputs {
    /// Standard proxies' scores.
    pub proxies: ProxyScores,
    /// Per-layer tensors (empty when no per-layer terminal is read).
    pub layers: Vec<LayerTensors>,
}

/// The inputs of `spec`'s untrained network (seeded, as [`crate::score`]
/// and [`layer_tensors`] build it) for an expression: the scores of
/// `proxies` on `data`, and the layer tensors when `with_layers`.
pub fn scalar_inputs(
    spec: &ModelSpec,
    data: &ProxyData,
    seed: u64,
    proxies: &[ProxyKind],
    with_layers: bool,
) -> Result<ScalarInputs, ProxyError> {
    let mut scores = ProxyScores::default();
    for &kind in proxies {
        scores.set(kind, crate::score(kind, spec, data, seed)?);
    }
    let layers = if with_layers {
        layer_tensors(spec, data, seed)?
    } else {
        Vec::new()
    };
    Ok(ScalarInputs {
        proxies: scores,
        layers,
    })
}

impl ScalarExpr {
    /// The score of one architecture (NaN when a terminal is missing;
    /// possibly infinite).
    pub fn score(&self, inputs: &ScalarInputs) -> f64 {
        match self {
            ScalarExpr::Terminal(Terminal::Proxy(kind)) => match inputs.proxies.get(*kind) {
                None => f64::NAN,
                Some(v) if v == f64::NEG_INFINITY => DEGENERATE_TERMINAL,
                Some(v) => v,
            },
            ScalarExpr::Terminal(Terminal::Layers(e)) => e.score(&inputs.layers),
            ScalarExpr::Unary(op, a) => op.apply(a.score(inputs)),
            ScalarExpr::Binary(op, a, b) => op.apply(a.score(inputs), b.score(inputs)),
        }
    }

    /// The standard proxies it reads, each once, in [`ProxyKind::ALL`]'s
    /// order.
    pub fn proxies_used(&self) -> Vec<ProxyKind> {
        let mut used = [false; ProxyKind::ALL.len()];
        self.visit(&mut |t| {
            if let Terminal::Proxy(k) = t {
                used[slot(*k)] = true;
            }
        });
        ProxyKind::ALL
            .into_iter()
            .filter(|&k| used[slot(k)])
            .collect()
    }

    /// Whether it reads a per-layer expression (so needs layer tensors).
    pub fn reads_layers(&self) -> bool {
        let mut any = false;
        self.visit(&mut |t| any |= matches!(t, Terminal::Layers(_)));
        any
    }

    fn visit(&self, f: &mut impl FnMut(&Terminal)) {
        match self {
            ScalarExpr::Terminal(t) => f(t),
            ScalarExpr::Unary(_, a) => a.visit(f),
            ScalarExpr::Binary(_, a, b) => {
                a.visit(f);
                b.visit(f);
            }
        }
    }

    /// Nodes of the architecture-level tree (a terminal is one).
    pub fn size(&self) -> usize {
        match self {
            ScalarExpr::Terminal(_) => 1,
            ScalarExpr::Unary(_, a) => 1 + a.size(),
            ScalarExpr::Binary(_, a, b) => 1 + a.size() + b.size(),
        }
    }

    /// Depth of the architecture-level tree (a terminal is 1; a per-layer
    /// terminal's own depth is bounded apart).
    pub fn depth(&self) -> usize {
        match self {
            ScalarExpr::Terminal(_) => 1,
            ScalarExpr::Unary(_, a) => 1 + a.depth(),
            ScalarExpr::Binary(_, a, b) => 1 + a.depth().max(b.depth()),
        }
    }

    /// The `index`-th node in pre-order and its depth (the root is 0).
    fn node_mut(&mut self, index: usize) -> Option<(&mut ScalarExpr, usize)> {
        fn go<'e>(
            e: &'e mut ScalarExpr,
            left: &mut usize,
            depth: usize,
        ) -> Option<(&'e mut ScalarExpr, usize)> {
            if *left == 0 {
                return Some((e, depth));
            }
            *left -= 1;
            match e {
                ScalarExpr::Terminal(_) => None,
                ScalarExpr::Unary(_, a) => go(a, left, depth + 1),
                ScalarExpr::Binary(_, a, b) => {
                    if let Some(n) = go(a, left, depth + 1) {
                        return Some(n);
                    }
                    go(b, left, depth + 1)
                }
            }
        }
        let mut left = index;
        go(self, &mut left, 0)
    }

    /// A random terminal: a standard proxy or a random per-layer
    /// expression (tensor part at most `layer_depth` levels), even odds.
    fn random_terminal(rng: &mut SmallRng, layer_depth: usize) -> Terminal {
        if rng.gen_bool(0.5) {
            Terminal::Proxy(*ProxyKind::ALL.choose(rng).expect("proxies exist"))
        } else {
            Terminal::Layers(Expression::random(rng, layer_depth))
        }
    }

    /// A random expression of at most `depth` architecture-level levels,
    /// its per-layer terminals at most `layer_depth` levels (grown as the
    /// tensor level grows its trees).
    pub fn random(rng: &mut SmallRng, depth: usize, layer_depth: usize) -> ScalarExpr {
        if depth <= 1 || rng.gen_bool(0.3) {
            return ScalarExpr::Terminal(Self::random_terminal(rng, layer_depth));
        }
        if rng.gen_bool(0.5) {
            ScalarExpr::Unary(
                *UNARY.choose(rng).expect("operators exist"),
                Box::new(ScalarExpr::random(rng, depth - 1, layer_depth)),
            )
        } else {
            ScalarExpr::Binary(
                *SCALAR_BINARY.choose(rng).expect("operators exist"),
                Box::new(ScalarExpr::random(rng, depth - 1, layer_depth)),
                Box::new(ScalarExpr::random(rng, depth - 1, layer_depth)),
            )
        }
    }
}

impl fmt::Display for ScalarExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScalarExpr::Terminal(Terminal::Proxy(k)) => f.write_str(k.name()),
            ScalarExpr::Terminal(Terminal::Layers(e)) => write!(f, "{e}"),
            ScalarExpr::Unary(op, a) => write!(f, "{}({a})", lower(op)),
            ScalarExpr::Binary(op, a, b) => write!(f, "{}({a}, {b})", lower(op)),
        }
    }
}

impl ExprParser<'_> {
    /// An architecture-level expression from the current position.
    fn scalar(&mut self) -> Result<ScalarExpr, ExpressionParseError> {
        self.skip_space();
        let start = self.pos;
        let name = self.ident()?;
        if name.ends_with("_layers") {
            self.pos = start;
            return Ok(ScalarExpr::Terminal(Terminal::Layers(self.expression()?)));
        }
        if let Some(kind) = ProxyKind::ALL.into_iter().find(|k| k.name() == name) {
            return Ok(ScalarExpr::Terminal(Terminal::Proxy(kind)));
        }
        if let Some(op) = UNARY.into_iter().find(|u| lower(u) == name) {
            self.expect('(')?;
            let a = self.scalar()?;
            self.expect(')')?;
            return Ok(ScalarExpr::Unary(op, Box::new(a)));
        }
        if let Some(op) = SCALAR_BINARY.into_iter().find(|b| lower(b) == name) {
            self.expect('(')?;
            let a = self.scalar()?;
            self.expect(',')?;
            let b = self.scalar()?;
            self.expect(')')?;
            return Ok(ScalarExpr::Binary(op, Box::new(a), Box::new(b)));
        }
        self.pos = start;
        Err(self.error(
            "a proxy (grad_norm, snip, grasp, fisher, synflow, jacob_cov, naswot, zen, zico, \
             expressflow, params, flops), a per-layer expression AGG_layers(RED(TENSOR)), or an \
             operator (abs, square, sqrt, log, exp, neg, inv, relu; add, sub, mul, div, max, min)",
        ))
    }
}

/// Reads the form `Display` writes, e.g.
/// `sub(zen, log(sum_layers(norm(dW))))`.
impl std::str::FromStr for ScalarExpr {
    type Err = ExpressionParseError;
    fn from_str(text: &str) -> Result<ScalarExpr, ExpressionParseError> {
        let mut p = ExprParser::new(text);
        let e = p.scalar()?;
        p.skip_space();
        if p.pos != text.len() {
            return Err(p.error("the end of the expression"));
        }
        Ok(e)
    }
}

/// The architecture level evolves with the tensor level's search: a
/// mutation redraws a random subtree (or, half the time at a per-layer
/// terminal, mutates that per-layer expression as the tensor level
/// does); a crossover grafts a random subtree of the other parent.
/// `max_depth` bounds both the architecture-level tree and each per-layer
/// terminal's tensor tree.
impl Genome for ScalarExpr {
    type Arch = ScalarInputs;
    const SETTINGS_TAG: &'static str = " terminals=proxies+tensors";

    fn random(rng: &mut SmallRng, max_depth: usize) -> ScalarExpr {
        ScalarExpr::random(rng, max_depth, max_depth)
    }

    fn mutate(&self, max_depth: usize, rng: &mut SmallRng) -> ScalarExpr {
        let mut out = self.clone();
        let at = rng.gen_range(0..out.size());
        let inner = rng.gen_bool(0.5);
        if let Some((node, depth)) = out.node_mut(at) {
            match node {
                ScalarExpr::Terminal(Terminal::Layers(e)) if inner => {
                    *e = evolve::mutate(e, max_depth, rng);
                }
                _ => {
                    let room = max_depth.saturating_sub(depth).max(1);
                    *node = ScalarExpr::random(rng, room, max_depth);
                }
            }
        }
        out
    }

    fn crossover(&self, other: &ScalarExpr, max_depth: usize, rng: &mut SmallRng) -> ScalarExpr {
        let mut donor_tree = other.clone();
        let donor_at = rng.gen_range(0..donor_tree.size());
        let donor = donor_tree
            .node_mut(donor_at)
            .map_or_else(|| other.clone(), |(n, _)| n.clone());
        let mut out = self.clone();
        let at = rng.gen_range(0..out.size());
        match out.node_mut(at) {
            Some((node, depth)) if depth + donor.depth() <= max_depth => *node = donor,
            _ => return self.mutate(max_depth, rng),
        }
        out
    }

    fn score(&self, arch: &ScalarInputs) -> f64 {
        ScalarExpr::score(self, arch)
    }

    fn parse(text: &str) -> Result<ScalarExpr, ExpressionParseError> {
        text.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evolve::{fitness, fitness_on, Evolution, EvolveSettings, RankTask, WORST_FITNESS};
    use rand::SeedableRng;

    fn proxy(kind: ProxyKind) -> Box<ScalarExpr> {
        Box::new(ScalarExpr::Terminal(Terminal::Proxy(kind)))
    }

    /// One layer of small tensors, every entry `v` (weights `(2, 2)`,
    /// activations `(3, 2)`).
    fn layer(v: f32) -> LayerTensors {
        let w = ndarray::Array2::from_elem((2, 2), v);
        let a = ndarray::Array2::from_elem((3, 2), v);
        LayerTensors {
            weight: w.clone(),
            weight_grad: w.clone(),
            weight_grad_noise: w,
            act: a.clone(),
            act_grad: a.clone(),
            act_noise: a.clone(),
            act_grad_noise: a.clone(),
            act_noisy: a.clone(),
            act_grad_noisy: a,
        }
    }

    /// Synthetic architectures: every proxy score drawn uniformly in
    /// [1, 2) and one or two layers of constant tensors.
    fn synthetic(count: usize, seed: u64) -> Vec<ScalarInputs> {
        let mut rng = SmallRng::seed_from_u64(seed);
        (0..count)
            .map(|_| {
                let mut proxies = ProxyScores::default();
                for k in ProxyKind::ALL {
                    proxies.set(k, rng.gen_range(1.0..2.0));
                }
                let layers = (0..rng.gen_range(1..3))
                    .map(|_| layer(rng.gen_range(-1.0f32..1.0)))
                    .collect();
                ScalarInputs { proxies, layers }
            })
            .collect()
    }

    #[test]
    fn an_expression_over_proxy_terminals_is_the_hand_computation() {
        let mut proxies = ProxyScores::default();
        proxies.set(ProxyKind::Zen, 3.0);
        proxies.set(ProxyKind::Params, 100.0);
        proxies.set(ProxyKind::Snip, -0.5);
        proxies.set(ProxyKind::Naswot, f64::NEG_INFINITY);
        let inputs = ScalarInputs {
            proxies,
            layers: vec![layer(2.0), layer(-1.0)],
        };
        let e: ScalarExpr =
            "sub(mul(zen, sum_layers(sum(W))), min(log(params), div(snip, neg(zen))))"
                .parse()
                .expect("parses");
        // Σ W over (2, 2) layers of 2 and -1: 8 - 4 = 4; zen · 4 = 12.
        // log(100 + ε) ≈ 4.605 and -0.5 / -3 = 1/6: min is 1/6.
        let by_hand = 3.0 * 4.0 - (-0.5 / (-3.0 - 1e-8));
        assert!(
            (e.score(&inputs) - by_hand).abs() < 1e-12,
            "{}",
            e.score(&inputs)
        );
        assert_eq!(
            e.proxies_used(),
            [ProxyKind::Snip, ProxyKind::Zen, ProxyKind::Params]
        );
        assert!(e.reads_layers());
        // A degenerate (-∞) proxy reads as the finite floor.
        let floor: ScalarExpr = "add(naswot, zen)".parse().unwrap();
        assert_eq!(floor.score(&inputs), DEGENERATE_TERMINAL + 3.0);
        assert!(!floor.reads_layers());
        // A proxy that was not computed makes the score NaN.
        let missing: ScalarExpr = "add(zen, flops)".parse().unwrap();
        assert!(missing.score(&inputs).is_nan());
    }

    #[test]
    fn expressions_print_and_parse_back() {
        let text = "sub(zen, mul(log(params), max_layers(norm(mul(W, dW)))))";
        let e: ScalarExpr = text.parse().expect("parses");
        assert_eq!(
            e,
            ScalarExpr::Binary(
                Binary::Sub,
                proxy(ProxyKind::Zen),
                Box::new(ScalarExpr::Binary(
                    Binary::Mul,
                    Box::new(ScalarExpr::Unary(Unary::Log, proxy(ProxyKind::Params))),
                    Box::new(ScalarExpr::Terminal(Terminal::Layers(
                        "max_layers(norm(mul(W, dW)))".parse().unwrap()
                    ))),
                )),
            )
        );
        assert_eq!(e.to_string(), text);
        let mut rng = SmallRng::seed_from_u64(4);
        for _ in 0..200 {
            let e = ScalarExpr::random(&mut rng, 5, 4);
            assert_eq!(e.to_string().parse::<ScalarExpr>(), Ok(e.clone()), "{e}");
        }
        for bad in [
            "sub(zen, W)",
            "sub(zen)",
            "min(zen, snip",
            "zen extra",
            "sub(zen, sum_layers(sum(add(W, A))))",
            "nope(zen)",
            "",
        ] {
            assert!(bad.parse::<ScalarExpr>().is_err(), "{bad}");
        }
        let err = "add(zen, relu(W))".parse::<ScalarExpr>().unwrap_err();
        assert_eq!(err.at, 14);
    }

    #[test]
    fn degenerate_expressions_get_the_worst_fitness() {
        let archs = synthetic(12, 1);
        let acc: Vec<f64> = (0..archs.len()).map(|i| i as f64).collect();
        let parse = |t: &str| t.parse::<ScalarExpr>().expect(t);
        // Constant on every architecture.
        assert_eq!(
            fitness(&parse("log(sub(zen, zen))"), &archs, &acc),
            WORST_FITNESS
        );
        // Infinite: 1/ε squared six times overflows.
        let mut t = "inv(sub(snip, snip))".to_owned();
        for _ in 0..6 {
            t = format!("square({t})");
        }
        assert_eq!(parse(&t).score(&archs[0]), f64::INFINITY);
        assert_eq!(fitness(&parse(&t), &archs, &acc), WORST_FITNESS);
        // NaN: inf − inf.
        let nan = format!("sub({t}, {t})");
        assert!(parse(&nan).score(&archs[0]).is_nan());
        assert_eq!(fitness(&parse(&nan), &archs, &acc), WORST_FITNESS);
        // A per-layer terminal on an architecture without layer tensors.
        let mut no_layers = archs.clone();
        no_layers[3].layers.clear();
        assert_eq!(
            fitness(&parse("add(zen, sum_layers(sum(W)))"), &no_layers, &acc),
            WORST_FITNESS
        );
        // A proxy that is not computed on one architecture.
        let mut missing = archs.clone();
        missing[5].proxies = ProxyScores::default();
        assert_eq!(fitness(&parse("zen"), &missing, &acc), WORST_FITNESS);
        // Random expressions, mutations and crossovers never panic, stay
        // within depth and score within τ's range or worst.
        let mut rng = SmallRng::seed_from_u64(2);
        let mut prev = ScalarExpr::random(&mut rng, 5, 4);
        for _ in 0..200 {
            let e = ScalarExpr::random(&mut rng, 5, 4);
            let f = fitness(&e, &archs, &acc);
            assert!(f == WORST_FITNESS || (-1.0..=1.0).contains(&f), "{e}: {f}");
            let m = Genome::mutate(&e, 5, &mut rng);
            let c = Genome::crossover(&e, &prev, 5, &mut rng);
            assert!(m.depth() <= 5 && c.depth() <= 5, "{m} / {c}");
            prev = m;
        }
    }

    #[test]
    fn evolution_recovers_a_known_combination() {
        // Accuracy is a monotone function of zen − snip, both uniform in
        // [1, 2) and independent of every other terminal: zen alone or
        // snip alone ranks at τ ≈ 0.5, only their difference at 1.
        let archs = synthetic(40, 3);
        let truth: ScalarExpr = "sub(zen, snip)".parse().unwrap();
        let acc: Vec<f64> = archs.iter().map(|a| truth.score(a).exp()).collect();
        assert_eq!(fitness(&truth, &archs, &acc), 1.0);
        let zen_alone = fitness(&*proxy(ProxyKind::Zen), &archs, &acc);
        assert!(zen_alone < 0.8, "{zen_alone}");
        let (search_archs, valid_archs) = archs.split_at(30);
        let (search_acc, valid_acc) = acc.split_at(30);
        let search = [RankTask {
            archs: search_archs,
            accuracy: search_acc,
        }];
        let validation = [RankTask {
            archs: valid_archs,
            accuracy: valid_acc,
        }];
        let settings = |seed| EvolveSettings {
            population: 60,
            generations: 30,
            seed,
            ..EvolveSettings::default()
        };
        let results: Vec<f64> = (0..8)
            .map(|seed| {
                let mut run = Evolution::<ScalarExpr>::start(&settings(seed), &search, &validation);
                while !run.finished() {
                    run.step(&search, &validation);
                }
                let r = run.result();
                // The pick's τ on every architecture.
                fitness_on(
                    &r.best,
                    &[RankTask {
                        archs: &archs,
                        accuracy: &acc,
                    }],
                )
            })
            .collect();
        // Not every seed leaves a local optimum in 30 generations, and
        // the pick is made on 10 validation architectures: at least half
        // must reach τ = 1, all must come close.
        assert!(
            results.iter().filter(|&&t| t >= 0.999).count() >= 4
                && results.iter().all(|&t| t >= 0.9),
            "τ per seed: {results:?}"
        );
    }

    #[test]
    fn a_resumed_run_continues_as_an_uninterrupted_one_and_levels_do_not_mix() {
        let archs = synthetic(16, 7);
        let acc: Vec<f64> = archs
            .iter()
            .map(|a| {
                a.proxies.get(ProxyKind::Zen).unwrap() * 2.0
                    - a.proxies.get(ProxyKind::Fisher).unwrap()
            })
            .collect();
        let search = [RankTask {
            archs: &archs,
            accuracy: &acc,
        }];
        let settings = EvolveSettings {
            population: 12,
            generations: 5,
            seed: 3,
            ..EvolveSettings::default()
        };
        let mut whole = Evolution::<ScalarExpr>::start(&settings, &search, &[]);
        while !whole.finished() {
            whole.step(&search, &[]);
        }
        let mut first = Evolution::<ScalarExpr>::start(&settings, &search, &[]);
        first.step(&search, &[]);
        first.step(&search, &[]);
        let text = first.checkpoint();
        assert!(text.contains("terminals=proxies+tensors"), "{text}");
        let mut resumed = Evolution::<ScalarExpr>::resume(&settings, &text).expect("resume");
        while !resumed.finished() {
            resumed.step(&search, &[]);
        }
        assert_eq!(resumed.bests(), whole.bests());
        // A checkpoint of the tensor level is refused by this level, and
        // the other way round.
        let tensor_archs: Vec<Vec<LayerTensors>> = archs.iter().map(|a| a.layers.clone()).collect();
        let tensor_search = [RankTask {
            archs: &tensor_archs,
            accuracy: &acc,
        }];
        let tensor_run = Evolution::<Expression>::start(&settings, &tensor_search, &[]);
        assert!(matches!(
            Evolution::<ScalarExpr>::resume(&settings, &tensor_run.checkpoint()),
            Err(evolve::CheckpointError::Settings { .. })
        ));
        assert!(matches!(
            Evolution::<Expression>::resume(&settings, &text),
            Err(evolve::CheckpointError::Settings { .. })
        ));
    }
}
