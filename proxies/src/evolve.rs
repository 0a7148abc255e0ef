//! Evolved proxies (the core of GreenMachine-style proxy search): an
//! expression tree over per-layer tensors of one minibatch, reduced per
//! layer and then over layers to one score; a seeded evolutionary search
//! (random initial population, tournament selection, subtree mutation,
//! crossover, elitism) whose fitness is Kendall τ-b between the
//! expression's scores and trained accuracies.
//!
//! Tensors of a linear layer come in two shapes: weight-shaped `(in, out)`
//! (weights, their gradient on data and on noise) and activation-shaped
//! `(rows, out)` (the layer's output and output gradient on data, on
//! Gaussian noise and on noisy data). A [`TensorExpr`] is typed by shape:
//! binary operators only join tensors of one shape, so every generated
//! expression is well formed; a hand-written one that mixes shapes
//! evaluates to NaN, i.e. the worst fitness.
//!
//! Operators are protected (`log(|x| + ε)`, `x / (y ± ε)`, `√|x|`, `exp`
//! clipped), and an expression whose score is NaN, infinite, or the same
//! on every architecture gets [`WORST_FITNESS`]: degenerate expressions lose
//! every tournament and never crash the search.
//!
//! Expressions print as `AGG_layers(RED(TENSOR))` (e.g.
//! `sum_layers(sum(abs(mul(W, dW))))`) and parse back from that text, so
//! the best one is kept in a readable file.
//!
//! [`Evolution`] runs the search a generation at a time over one or more
//! datasets ([`RankTask`]s; fitness is the mean τ over them), keeps each
//! generation's best, picks the final expression on a disjoint validation
//! set when one is given, and saves and resumes itself as readable text.

use crate::probe::{build, loss_backward, weights};
use crate::rank::kendall_tau_b;
use crate::{ProxyData, ProxyError};
use ndarray::{Array2, ArrayView2, Zip};
use nn_plan::ModelSpec;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use std::fmt;
use tabular_nn::model::visit::{LayerKind, Observer};

/// Fitness of a degenerate expression (NaN, infinite or constant scores):
/// below every Kendall τ.
pub const WORST_FITNESS: f64 = f64::NEG_INFINITY;

/// The ε of protected operators.
pub const PROTECT_EPS: f64 = 1e-8;

/// Standard deviation of the noise added to the data for the "noisy data"
/// tensors.
pub const NOISY_DATA_SIGMA: f32 = 0.1;

/// A per-layer tensor an expression reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leaf {
    /// Weights `(in, out)`.
    Weight,
    /// ∂L/∂W on the data batch.
    WeightGrad,
    /// ∂L/∂W on Gaussian-noise inputs (same labels).
    WeightGradNoise,
    /// The layer's output on data `(rows, out)`.
    Act,
    /// ∂L/∂(output) on data.
    ActGrad,
    /// The output on Gaussian-noise inputs.
    ActNoise,
    /// ∂L/∂(output) on noise.
    ActGradNoise,
    /// The output on the data plus a little noise.
    ActNoisy,
    /// ∂L/∂(output) on the noisy data.
    ActGradNoisy,
}

/// Shape class of a tensor expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `(in, out)`.
    Weight,
    /// `(rows, out)`.
    Activation,
}

impl Leaf {
    const WEIGHT: [Leaf; 3] = [Leaf::Weight, Leaf::WeightGrad, Leaf::WeightGradNoise];
    const ACTIVATION: [Leaf; 6] = [
        Leaf::Act,
        Leaf::ActGrad,
        Leaf::ActNoise,
        Leaf::ActGradNoise,
        Leaf::ActNoisy,
        Leaf::ActGradNoisy,
    ];

    /// Its shape class.
    pub fn shape(self) -> Shape {
        if Leaf::WEIGHT.contains(&self) {
            Shape::Weight
        } else {
            Shape::Activation
        }
    }

    fn name(self) -> &'static str {
        match self {
            Leaf::Weight => "W",
            Leaf::WeightGrad => "dW",
            Leaf::WeightGradNoise => "dW_noise",
            Leaf::Act => "A",
            Leaf::ActGrad => "dA",
            Leaf::ActNoise => "A_noise",
            Leaf::ActGradNoise => "dA_noise",
            Leaf::ActNoisy => "A_noisy",
            Leaf::ActGradNoisy => "dA_noisy",
        }
    }
}

/// Element-wise unary operators (protected).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unary {
    /// |x|.
    Abs,
    /// x².
    Square,
    /// √|x|.
    Sqrt,
    /// log(|x| + ε).
    Log,
    /// exp(min(x, 50)).
    Exp,
    /// −x.
    Neg,
    /// 1 / (x ± ε) (the sign of x, + at 0).
    Inv,
    /// max(x, 0).
    Relu,
}

/// Element-wise binary operators (protected).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    /// x + y.
    Add,
    /// x − y.
    Sub,
    /// x · y.
    Mul,
    /// x / (y ± ε).
    Div,
    /// max(x, y).
    Max,
    /// min(x, y) (architecture-level expressions only: the tensor level
    /// keeps the five operators above, so its runs are unchanged).
    Min,
}

/// Reduction of a tensor to one number per layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduce {
    /// Σ.
    Sum,
    /// Mean.
    Mean,
    /// Frobenius norm.
    Norm,
    /// Standard deviation (population).
    Std,
}

/// Aggregation of the per-layer numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    /// Σ over layers.
    Sum,
    /// Mean over layers.
    Mean,
    /// Largest.
    Max,
    /// Smallest.
    Min,
}

pub(crate) const UNARY: [Unary; 8] = [
    Unary::Abs,
    Unary::Square,
    Unary::Sqrt,
    Unary::Log,
    Unary::Exp,
    Unary::Neg,
    Unary::Inv,
    Unary::Relu,
];
const BINARY: [Binary; 5] = [
    Binary::Add,
    Binary::Sub,
    Binary::Mul,
    Binary::Div,
    Binary::Max,
];
const REDUCE: [Reduce; 4] = [Reduce::Sum, Reduce::Mean, Reduce::Norm, Reduce::Std];
const AGGREGATE: [Aggregate; 4] = [
    Aggregate::Sum,
    Aggregate::Mean,
    Aggregate::Max,
    Aggregate::Min,
];

impl Unary {
    pub(crate) fn apply(self, x: f64) -> f64 {
        match self {
            Unary::Abs => x.abs(),
            Unary::Square => x * x,
            Unary::Sqrt => x.abs().sqrt(),
            Unary::Log => (x.abs() + PROTECT_EPS).ln(),
            Unary::Exp => x.min(50.0).exp(),
            Unary::Neg => -x,
            Unary::Inv => 1.0 / protect(x),
            Unary::Relu => x.max(0.0),
        }
    }
}

/// `x` moved away from 0 by ε, keeping its sign (+ at 0).
fn protect(x: f64) -> f64 {
    if x >= 0.0 {
        x + PROTECT_EPS
    } else {
        x - PROTECT_EPS
    }
}

impl Binary {
    pub(crate) fn apply(self, x: f64, y: f64) -> f64 {
        match self {
            Binary::Add => x + y,
            Binary::Sub => x - y,
            Binary::Mul => x * y,
            Binary::Div => x / protect(y),
            Binary::Max => x.max(y),
            Binary::Min => x.min(y),
        }
    }
}

/// A tensor-valued expression.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorExpr {
    /// A per-layer tensor.
    Leaf(Leaf),
    /// An element-wise function of one expression.
    Unary(Unary, Box<TensorExpr>),
    /// An element-wise function of two expressions of the same shape.
    Binary(Binary, Box<TensorExpr>, Box<TensorExpr>),
}

impl TensorExpr {
    /// The shape class; `None` when a binary operator joins two shapes.
    pub fn shape(&self) -> Option<Shape> {
        match self {
            TensorExpr::Leaf(l) => Some(l.shape()),
            TensorExpr::Unary(_, a) => a.shape(),
            TensorExpr::Binary(_, a, b) => {
                let (a, b) = (a.shape()?, b.shape()?);
                (a == b).then_some(a)
            }
        }
    }

    /// Nodes in the tree.
    pub fn size(&self) -> usize {
        match self {
            TensorExpr::Leaf(_) => 1,
            TensorExpr::Unary(_, a) => 1 + a.size(),
            TensorExpr::Binary(_, a, b) => 1 + a.size() + b.size(),
        }
    }

    /// Depth (a leaf is 1).
    pub fn depth(&self) -> usize {
        match self {
            TensorExpr::Leaf(_) => 1,
            TensorExpr::Unary(_, a) => 1 + a.depth(),
            TensorExpr::Binary(_, a, b) => 1 + a.depth().max(b.depth()),
        }
    }

    fn eval(&self, layer: &LayerTensors) -> Option<Array2<f64>> {
        Some(match self {
            TensorExpr::Leaf(l) => layer.get(*l).mapv(f64::from),
            TensorExpr::Unary(op, a) => a.eval(layer)?.mapv_into(|x| op.apply(x)),
            TensorExpr::Binary(op, a, b) => {
                let (mut a, b) = (a.eval(layer)?, b.eval(layer)?);
                if a.dim() != b.dim() {
                    return None;
                }
                Zip::from(&mut a)
                    .and(&b)
                    .for_each(|x, &y| *x = op.apply(*x, y));
                a
            }
        })
    }

    /// The `index`-th node in pre-order, mutably.
    fn node_mut(&mut self, index: usize) -> Option<&mut TensorExpr> {
        let mut left = index;
        self.walk_mut(&mut left)
    }

    fn walk_mut(&mut self, left: &mut usize) -> Option<&mut TensorExpr> {
        if *left == 0 {
            return Some(self);
        }
        *left -= 1;
        match self {
            TensorExpr::Leaf(_) => None,
            TensorExpr::Unary(_, a) => a.walk_mut(left),
            TensorExpr::Binary(_, a, b) => {
                if let Some(n) = a.walk_mut(left) {
                    return Some(n);
                }
                b.walk_mut(left)
            }
        }
    }

    /// A random expression of shape `shape` with at most `depth` levels.
    pub fn random(rng: &mut SmallRng, shape: Shape, depth: usize) -> TensorExpr {
        let leaves: &[Leaf] = match shape {
            Shape::Weight => &Leaf::WEIGHT,
            Shape::Activation => &Leaf::ACTIVATION,
        };
        // Leaves become likelier as depth runs out (grow initialisation).
        if depth <= 1 || rng.gen_bool(0.3) {
            return TensorExpr::Leaf(*leaves.choose(rng).expect("leaves exist"));
        }
        if rng.gen_bool(0.5) {
            TensorExpr::Unary(
                *UNARY.choose(rng).expect("operators exist"),
                Box::new(TensorExpr::random(rng, shape, depth - 1)),
            )
        } else {
            TensorExpr::Binary(
                *BINARY.choose(rng).expect("operators exist"),
                Box::new(TensorExpr::random(rng, shape, depth - 1)),
                Box::new(TensorExpr::random(rng, shape, depth - 1)),
            )
        }
    }
}

impl fmt::Display for TensorExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TensorExpr::Leaf(l) => f.write_str(l.name()),
            TensorExpr::Unary(op, a) => write!(f, "{}({a})", format!("{op:?}").to_lowercase()),
            TensorExpr::Binary(op, a, b) => {
                write!(f, "{}({a}, {b})", format!("{op:?}").to_lowercase())
            }
        }
    }
}

/// A proxy expression: a tensor expression, reduced per layer, aggregated
/// over layers.
#[derive(Debug, Clone, PartialEq)]
pub struct Expression {
    /// Per-layer tensor.
    pub tensor: TensorExpr,
    /// Per-layer reduction.
    pub reduce: Reduce,
    /// Aggregation over layers.
    pub aggregate: Aggregate,
}

impl fmt::Display for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}_layers({}({}))",
            format!("{:?}", self.aggregate).to_lowercase(),
            format!("{:?}", self.reduce).to_lowercase(),
            self.tensor
        )
    }
}

/// Why an expression's text does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expression {text:?}, at character {at}: {problem}")]
pub struct ExpressionParseError {
    /// The text.
    pub text: String,
    /// Character offset of the problem.
    pub at: usize,
    /// What was expected.
    pub problem: String,
}

/// Reads the form [`Expression`]'s `Display` writes:
/// `AGG_layers(RED(TENSOR))`, e.g. `sum_layers(sum(abs(mul(W, dW))))`.
impl std::str::FromStr for Expression {
    type Err = ExpressionParseError;
    fn from_str(text: &str) -> Result<Expression, ExpressionParseError> {
        let mut p = ExprParser::new(text);
        let e = p.expression()?;
        p.skip_space();
        if p.pos != text.len() {
            return Err(p.error("the end of the expression"));
        }
        Ok(e)
    }
}

impl ExprParser<'_> {
    /// An `AGG_layers(RED(TENSOR))` expression from the current position.
    pub(crate) fn expression(&mut self) -> Result<Expression, ExpressionParseError> {
        let p = self;
        let agg_name = p.ident()?;
        let aggregate = AGGREGATE
            .into_iter()
            .find(|a| format!("{}_layers", lower(a)) == agg_name)
            .ok_or_else(|| {
                p.error("an aggregation: sum_layers, mean_layers, max_layers, min_layers")
            })?;
        p.expect('(')?;
        let red_name = p.ident()?;
        let reduce = REDUCE
            .into_iter()
            .find(|r| lower(r) == red_name)
            .ok_or_else(|| p.error("a reduction: sum, mean, norm, std"))?;
        p.expect('(')?;
        let start = p.pos;
        let tensor = p.tensor()?;
        if tensor.shape().is_none() {
            p.pos = start;
            return Err(
                p.error("operands of one shape (weights W, dW, dW_noise or activations A...)")
            );
        }
        p.expect(')')?;
        p.expect(')')?;
        Ok(Expression {
            tensor,
            reduce,
            aggregate,
        })
    }
}

pub(crate) fn lower(v: &impl fmt::Debug) -> String {
    format!("{v:?}").to_lowercase()
}

/// A reader of expression text (shared by the tensor and the
/// architecture level, [`crate::scalar`]).
pub(crate) struct ExprParser<'a> {
    pub(crate) text: &'a str,
    pub(crate) pos: usize,
}

impl<'a> ExprParser<'a> {
    pub(crate) fn new(text: &'a str) -> ExprParser<'a> {
        ExprParser { text, pos: 0 }
    }
    pub(crate) fn error(&self, expected: &str) -> ExpressionParseError {
        ExpressionParseError {
            text: self.text.to_owned(),
            at: self.pos,
            problem: format!("expected {expected}"),
        }
    }
    pub(crate) fn skip_space(&mut self) {
        while self.text[self.pos..].starts_with(char::is_whitespace) {
            self.pos += 1;
        }
    }
    pub(crate) fn ident(&mut self) -> Result<String, ExpressionParseError> {
        self.skip_space();
        let rest = &self.text[self.pos..];
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if len == 0 {
            return Err(self.error("a name"));
        }
        self.pos += len;
        Ok(rest[..len].to_owned())
    }
    pub(crate) fn expect(&mut self, c: char) -> Result<(), ExpressionParseError> {
        self.skip_space();
        if self.text[self.pos..].starts_with(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(&format!("{c:?}")))
        }
    }
    fn tensor(&mut self) -> Result<TensorExpr, ExpressionParseError> {
        let start = self.pos;
        let name = self.ident()?;
        let leaves = Leaf::WEIGHT.iter().chain(Leaf::ACTIVATION.iter());
        if let Some(leaf) = leaves.copied().find(|l| l.name() == name) {
            return Ok(TensorExpr::Leaf(leaf));
        }
        if let Some(op) = UNARY.into_iter().find(|u| lower(u) == name) {
            self.expect('(')?;
            let a = self.tensor()?;
            self.expect(')')?;
            return Ok(TensorExpr::Unary(op, Box::new(a)));
        }
        if let Some(op) = BINARY.into_iter().find(|b| lower(b) == name) {
            self.expect('(')?;
            let a = self.tensor()?;
            self.expect(',')?;
            let b = self.tensor()?;
            self.expect(')')?;
            return Ok(TensorExpr::Binary(op, Box::new(a), Box::new(b)));
        }
        self.pos = start;
        Err(self.error("a tensor (W, dW, dW_noise, A, dA, A_noise, dA_noise, A_noisy, dA_noisy) or an operator"))
    }
}

impl Expression {
    /// The score of one architecture (NaN when the expression is
    /// ill-formed; possibly infinite).
    pub fn score(&self, layers: &[LayerTensors]) -> f64 {
        let mut per_layer = Vec::with_capacity(layers.len());
        for layer in layers {
            let Some(t) = self.tensor.eval(layer) else {
                return f64::NAN;
            };
            let n = t.len().max(1) as f64;
            let sum: f64 = t.iter().sum();
            per_layer.push(match self.reduce {
                Reduce::Sum => sum,
                Reduce::Mean => sum / n,
                Reduce::Norm => t.iter().map(|x| x * x).sum::<f64>().sqrt(),
                Reduce::Std => {
                    let m = sum / n;
                    (t.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n).sqrt()
                }
            });
        }
        if per_layer.is_empty() {
            return f64::NAN;
        }
        match self.aggregate {
            Aggregate::Sum => per_layer.iter().sum(),
            Aggregate::Mean => per_layer.iter().sum::<f64>() / per_layer.len() as f64,
            Aggregate::Max => per_layer.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            Aggregate::Min => per_layer.iter().copied().fold(f64::INFINITY, f64::min),
        }
    }

    /// A random expression (tensor part at most `depth` levels).
    pub fn random(rng: &mut SmallRng, depth: usize) -> Expression {
        let shape = if rng.gen_bool(0.5) {
            Shape::Weight
        } else {
            Shape::Activation
        };
        Expression {
            tensor: TensorExpr::random(rng, shape, depth),
            reduce: *REDUCE.choose(rng).expect("reductions exist"),
            aggregate: *AGGREGATE.choose(rng).expect("aggregations exist"),
        }
    }
}

/// What [`Evolution`] evolves: an expression that scores one
/// architecture from what [`Genome::Arch`] holds of it. Two levels exist:
/// [`Expression`] (per-layer tensors reduced and aggregated, the
/// GreenMachine/EZNAS form) and [`crate::scalar::ScalarExpr`] (an
/// architecture-level expression over the standard proxies' scores and
/// per-layer expressions). Both evolve with the same tournament,
/// crossover, mutation, elitism and validation pick.
pub trait Genome: Clone + PartialEq + fmt::Display + fmt::Debug {
    /// What one architecture offers the expression.
    type Arch;
    /// Appended to the checkpoint's settings line, so that a checkpoint of
    /// one level is refused by a run of the other ("" for [`Expression`],
    /// whose checkpoints predate the second level).
    const SETTINGS_TAG: &'static str;
    /// A random expression of at most `max_depth` levels.
    fn random(rng: &mut SmallRng, max_depth: usize) -> Self;
    /// A copy with one random change.
    fn mutate(&self, max_depth: usize, rng: &mut SmallRng) -> Self;
    /// A child of `self` and `other`.
    fn crossover(&self, other: &Self, max_depth: usize, rng: &mut SmallRng) -> Self;
    /// The score of one architecture (NaN when ill-formed; possibly
    /// infinite).
    fn score(&self, arch: &Self::Arch) -> f64;
    /// Reads the text `Display` writes.
    fn parse(text: &str) -> Result<Self, ExpressionParseError>;
}

impl Genome for Expression {
    type Arch = Vec<LayerTensors>;
    const SETTINGS_TAG: &'static str = "";
    fn random(rng: &mut SmallRng, max_depth: usize) -> Expression {
        Expression::random(rng, max_depth)
    }
    fn mutate(&self, max_depth: usize, rng: &mut SmallRng) -> Expression {
        mutate(self, max_depth, rng)
    }
    fn crossover(&self, other: &Expression, max_depth: usize, rng: &mut SmallRng) -> Expression {
        crossover(self, other, max_depth, rng)
    }
    fn score(&self, arch: &Vec<LayerTensors>) -> f64 {
        Expression::score(self, arch)
    }
    fn parse(text: &str) -> Result<Expression, ExpressionParseError> {
        text.parse()
    }
}

/// Fitness of `expr`: Kendall τ-b between its scores on `archs` and
/// `accuracy`; [`WORST_FITNESS`] when a score is NaN or infinite or all
/// scores are equal.
pub fn fitness<G: Genome>(expr: &G, archs: &[G::Arch], accuracy: &[f64]) -> f64 {
    let scores: Vec<f64> = archs.iter().map(|a| expr.score(a)).collect();
    if scores.iter().any(|s| !s.is_finite()) {
        return WORST_FITNESS;
    }
    kendall_tau_b(&scores, accuracy).unwrap_or(WORST_FITNESS)
}

/// One ranking task: a sample of architectures of one dataset (what an
/// expression reads of each: their layer tensors by default) and the
/// accuracies they trained to.
#[derive(Debug)]
pub struct RankTask<'a, A = Vec<LayerTensors>> {
    /// What the expression reads of each architecture.
    pub archs: &'a [A],
    /// Trained accuracy of each architecture.
    pub accuracy: &'a [f64],
}

// Derived Clone/Copy would ask `A: Copy`; the task only borrows.
impl<A> Clone for RankTask<'_, A> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<A> Copy for RankTask<'_, A> {}

/// Fitness over several tasks (datasets): the mean of [`fitness`] on each,
/// [`WORST_FITNESS`] when any is degenerate or there is no task. An
/// expression must rank well on every dataset it is evolved on, not on the
/// one with most architectures.
pub fn fitness_on<G: Genome>(expr: &G, tasks: &[RankTask<'_, G::Arch>]) -> f64 {
    if tasks.is_empty() {
        return WORST_FITNESS;
    }
    let mut sum = 0.0;
    for t in tasks {
        let f = fitness(expr, t.archs, t.accuracy);
        if f == WORST_FITNESS {
            return WORST_FITNESS;
        }
        sum += f;
    }
    sum / tasks.len() as f64
}

/// Settings of an evolutionary run.
#[derive(Debug, Clone, PartialEq)]
pub struct EvolveSettings {
    /// Population size.
    pub population: usize,
    /// Generations after the initial population.
    pub generations: usize,
    /// Tournament size.
    pub tournament: usize,
    /// Best individuals copied unchanged into the next generation.
    pub elites: usize,
    /// Probability that a child is made by crossover (else by mutation).
    pub crossover: f64,
    /// Maximum depth of the tensor expression.
    pub max_depth: usize,
    /// Seed.
    pub seed: u64,
}

impl Default for EvolveSettings {
    fn default() -> EvolveSettings {
        EvolveSettings {
            population: 40,
            generations: 20,
            tournament: 3,
            elites: 2,
            crossover: 0.5,
            max_depth: 4,
            seed: 0,
        }
    }
}

/// The best expression found and the best fitness after each generation.
#[derive(Debug, Clone)]
pub struct EvolveResult<G = Expression> {
    /// The best expression: by validation fitness among the generations'
    /// best when a validation set was given, else by search fitness.
    pub best: G,
    /// Its search fitness.
    pub fitness: f64,
    /// Its validation fitness, when a validation set was given.
    pub validation: Option<f64>,
    /// The generation whose best it is (0: the initial population).
    pub generation: usize,
    /// Best search fitness of the initial population, then of each
    /// generation.
    pub history: Vec<f64>,
}

/// The best individual of one generation.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationBest<G = Expression> {
    /// The generation (0: the initial population).
    pub generation: usize,
    /// Its best expression by search fitness.
    pub expression: G,
    /// Search fitness.
    pub fitness: f64,
    /// Validation fitness (when a validation set is given).
    pub validation: Option<f64>,
}

/// Why a checkpoint cannot be resumed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// A line does not parse.
    #[error("checkpoint line {line}: {problem}")]
    Line {
        /// Line number (from 1).
        line: usize,
        /// What is wrong.
        problem: String,
    },
    /// The checkpoint was written with other settings.
    #[error("the checkpoint was written with {written}, this run has {now}: resume with the same settings or start afresh")]
    Settings {
        /// Settings recorded in the checkpoint.
        written: String,
        /// Settings of this run.
        now: String,
    },
}

/// A resumable evolutionary run: [`Evolution::start`] draws the initial
/// population, each [`Evolution::step`] makes one generation, and
/// [`Evolution::checkpoint`] / [`Evolution::resume`] save and restore it
/// between generations. Each generation draws from its own seeded
/// generator (seed and generation number), so a resumed run continues
/// exactly as an uninterrupted one would.
#[derive(Debug, Clone)]
pub struct Evolution<G = Expression> {
    settings: EvolveSettings,
    generation: usize,
    population: Vec<(G, f64)>,
    bests: Vec<GenerationBest<G>>,
}

/// The generator of generation `generation`.
fn generation_rng(seed: u64, generation: usize) -> SmallRng {
    SmallRng::seed_from_u64(
        seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (generation as u64).wrapping_add(1),
    )
}

fn by_fitness<G>(a: &(G, f64), b: &(G, f64)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1)
}

impl<G: Genome> Evolution<G> {
    /// The initial population, scored on `search` (and its best on
    /// `validation`, when not empty).
    pub fn start(
        settings: &EvolveSettings,
        search: &[RankTask<'_, G::Arch>],
        validation: &[RankTask<'_, G::Arch>],
    ) -> Evolution<G> {
        let mut rng = generation_rng(settings.seed, 0);
        let size = settings.population.max(2);
        let mut population: Vec<(G, f64)> = (0..size)
            .map(|_| {
                let e = G::random(&mut rng, settings.max_depth);
                let f = fitness_on(&e, search);
                (e, f)
            })
            .collect();
        population.sort_by(by_fitness);
        let mut run = Evolution {
            settings: settings.clone(),
            generation: 0,
            population,
            bests: Vec::new(),
        };
        run.record_best(validation);
        run
    }

    fn record_best(&mut self, validation: &[RankTask<'_, G::Arch>]) {
        let (expression, fitness) = self.population[0].clone();
        let validation = (!validation.is_empty()).then(|| fitness_on(&expression, validation));
        self.bests.push(GenerationBest {
            generation: self.generation,
            expression,
            fitness,
            validation,
        });
    }

    /// Generations made after the initial population.
    pub fn generation(&self) -> usize {
        self.generation
    }

    /// Whether every configured generation was made.
    pub fn finished(&self) -> bool {
        self.generation >= self.settings.generations
    }

    /// The best of the initial population and of each generation so far.
    pub fn bests(&self) -> &[GenerationBest<G>] {
        &self.bests
    }

    /// Makes one generation: elites kept, the rest children of tournament
    /// winners by crossover or mutation.
    pub fn step(&mut self, search: &[RankTask<'_, G::Arch>], validation: &[RankTask<'_, G::Arch>]) {
        let s = &self.settings;
        let mut rng = generation_rng(s.seed, self.generation + 1);
        let size = self.population.len();
        let mut next: Vec<(G, f64)> = self
            .population
            .iter()
            .take(s.elites.min(size))
            .cloned()
            .collect();
        while next.len() < size {
            let parent = tournament(&self.population, s.tournament, &mut rng);
            let child = if rng.gen_bool(s.crossover.clamp(0.0, 1.0)) {
                let other = tournament(&self.population, s.tournament, &mut rng);
                parent.crossover(other, s.max_depth, &mut rng)
            } else {
                parent.mutate(s.max_depth, &mut rng)
            };
            let f = fitness_on(&child, search);
            next.push((child, f));
        }
        next.sort_by(by_fitness);
        self.population = next;
        self.generation += 1;
        self.record_best(validation);
    }

    /// The result so far: the generations' best with the highest
    /// validation fitness when a validation set was given (model selection
    /// on data evolution did not fit), else the best by search fitness.
    pub fn result(&self) -> EvolveResult<G> {
        let pick = self
            .bests
            .iter()
            .max_by(|a, b| match (a.validation, b.validation) {
                // Ties go to the later generation.
                (Some(x), Some(y)) => x.total_cmp(&y),
                _ => a.fitness.total_cmp(&b.fitness),
            })
            .expect("the initial population's best is recorded");
        EvolveResult {
            best: pick.expression.clone(),
            fitness: pick.fitness,
            validation: pick.validation,
            generation: pick.generation,
            history: self.bests.iter().map(|b| b.fitness).collect(),
        }
    }

    fn settings_line(s: &EvolveSettings) -> String {
        format!(
            "population={} generations={} tournament={} elites={} crossover={} max_depth={} seed={}{}",
            s.population,
            s.generations,
            s.tournament,
            s.elites,
            s.crossover,
            s.max_depth,
            s.seed,
            G::SETTINGS_TAG
        )
    }

    /// The run as readable text (settings, each generation's best, the
    /// population), for [`Evolution::resume`].
    pub fn checkpoint(&self) -> String {
        let mut out = format!(
            "# proxies evolution checkpoint\nsettings {}\ngeneration {}\n",
            Self::settings_line(&self.settings),
            self.generation
        );
        for b in &self.bests {
            let v = b.validation.map_or("-".to_owned(), |v| v.to_string());
            out.push_str(&format!(
                "best {} {} {} {}\n",
                b.generation, b.fitness, v, b.expression
            ));
        }
        for (e, f) in &self.population {
            out.push_str(&format!("member {f} {e}\n"));
        }
        out
    }

    /// Restores a run [`Evolution::checkpoint`] wrote, refusing one made
    /// with other settings (every setting except `generations`, which
    /// may grow to continue a finished run).
    pub fn resume(settings: &EvolveSettings, text: &str) -> Result<Evolution<G>, CheckpointError> {
        let mut generation = None;
        let mut bests = Vec::new();
        let mut population = Vec::new();
        let line_error = |line: usize, problem: String| CheckpointError::Line { line, problem };
        let number = |line: usize, what: &str, v: Option<&str>| -> Result<f64, CheckpointError> {
            let v = v.ok_or_else(|| line_error(line, format!("missing {what}")))?;
            match v {
                "-inf" => Ok(f64::NEG_INFINITY),
                _ => v
                    .parse::<f64>()
                    .map_err(|_| line_error(line, format!("{what} {v:?} is not a number"))),
            }
        };
        let expression = |line: usize, rest: &str| -> Result<G, CheckpointError> {
            G::parse(rest).map_err(|e: ExpressionParseError| line_error(line, e.to_string()))
        };
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let raw = raw.trim();
            if raw.is_empty() || raw.starts_with('#') {
                continue;
            }
            let (key, rest) = raw.split_once(' ').unwrap_or((raw, ""));
            match key {
                "settings" => {
                    let written = rest.trim();
                    let now = Self::settings_line(settings);
                    let without_generations = |t: &str| {
                        t.split(' ')
                            .filter(|kv| !kv.starts_with("generations="))
                            .collect::<Vec<_>>()
                            .join(" ")
                    };
                    if without_generations(written) != without_generations(&now) {
                        return Err(CheckpointError::Settings {
                            written: written.to_owned(),
                            now,
                        });
                    }
                }
                "generation" => {
                    generation = Some(rest.trim().parse::<usize>().map_err(|_| {
                        line_error(line, format!("generation {rest:?} is not a count"))
                    })?);
                }
                "best" => {
                    let mut parts = rest.splitn(4, ' ');
                    let g = parts.next().and_then(|g| g.parse::<usize>().ok());
                    let g = g.ok_or_else(|| line_error(line, "missing generation".into()))?;
                    let fitness = number(line, "fitness", parts.next())?;
                    let validation = match parts.next() {
                        Some("-") => None,
                        v => Some(number(line, "validation", v)?),
                    };
                    let e = expression(line, parts.next().unwrap_or(""))?;
                    bests.push(GenerationBest {
                        generation: g,
                        expression: e,
                        fitness,
                        validation,
                    });
                }
                "member" => {
                    let (f, e) = rest.split_once(' ').unwrap_or((rest, ""));
                    let f = number(line, "fitness", Some(f))?;
                    population.push((expression(line, e)?, f));
                }
                other => return Err(line_error(line, format!("unknown key {other:?}"))),
            }
        }
        let generation =
            generation.ok_or_else(|| line_error(0, "no `generation` line".to_owned()))?;
        if population.len() != settings.population.max(2) {
            return Err(line_error(
                0,
                format!(
                    "{} members, the population is {}",
                    population.len(),
                    settings.population.max(2)
                ),
            ));
        }
        if bests.len() != generation + 1 {
            return Err(line_error(
                0,
                format!("{} `best` lines for generation {generation}", bests.len()),
            ));
        }
        population.sort_by(by_fitness);
        Ok(Evolution {
            settings: settings.clone(),
            generation,
            population,
            bests,
        })
    }
}

/// Evolves an expression maximising [`fitness`] on `archs`/`accuracy`
/// (one task, no validation set, not resumable: [`Evolution`] is).
pub fn evolve(
    archs: &[Vec<LayerTensors>],
    accuracy: &[f64],
    settings: &EvolveSettings,
) -> EvolveResult {
    let search = [RankTask { archs, accuracy }];
    let mut run = Evolution::<Expression>::start(settings, &search, &[]);
    while !run.finished() {
        run.step(&search, &[]);
    }
    run.result()
}

fn tournament<'a, G>(pop: &'a [(G, f64)], k: usize, rng: &mut SmallRng) -> &'a G {
    let mut best: Option<&(G, f64)> = None;
    for _ in 0..k.max(1) {
        let c = &pop[rng.gen_range(0..pop.len())];
        if best.is_none_or(|b| c.1 > b.1) {
            best = Some(c);
        }
    }
    &best.expect("k >= 1 draws").0
}

/// A copy of `e` with one change: a random subtree replaced (same shape),
/// or the reduction or the aggregation redrawn.
pub fn mutate(e: &Expression, max_depth: usize, rng: &mut SmallRng) -> Expression {
    let mut out = e.clone();
    match rng.gen_range(0..6) {
        0 => out.reduce = *REDUCE.choose(rng).expect("reductions exist"),
        1 => out.aggregate = *AGGREGATE.choose(rng).expect("aggregations exist"),
        _ => {
            let at = rng.gen_range(0..out.tensor.size());
            let shape = out.tensor.shape().unwrap_or(Shape::Weight);
            let room = max_depth
                .saturating_sub(depth_of_node(&out.tensor, at))
                .max(1);
            if let Some(node) = out.tensor.node_mut(at) {
                *node = TensorExpr::random(rng, shape, room);
            }
        }
    }
    out
}

/// Depth at which the `index`-th pre-order node sits (the root is 0).
fn depth_of_node(t: &TensorExpr, index: usize) -> usize {
    fn go(t: &TensorExpr, left: &mut usize, depth: usize) -> Option<usize> {
        if *left == 0 {
            return Some(depth);
        }
        *left -= 1;
        match t {
            TensorExpr::Leaf(_) => None,
            TensorExpr::Unary(_, a) => go(a, left, depth + 1),
            TensorExpr::Binary(_, a, b) => {
                go(a, left, depth + 1).or_else(|| go(b, left, depth + 1))
            }
        }
    }
    let mut left = index;
    go(t, &mut left, 0).unwrap_or(0)
}

/// A child of `a` with a random subtree of `a` replaced by a random
/// subtree of `b` (when both trees have the same shape; otherwise `a`
/// mutated), kept within `max_depth`.
pub fn crossover(
    a: &Expression,
    b: &Expression,
    max_depth: usize,
    rng: &mut SmallRng,
) -> Expression {
    if a.tensor.shape() != b.tensor.shape() {
        return mutate(a, max_depth, rng);
    }
    let mut out = a.clone();
    let mut donor_tree = b.tensor.clone();
    let donor_at = rng.gen_range(0..donor_tree.size());
    let donor = donor_tree
        .node_mut(donor_at)
        .map(|n| n.clone())
        .unwrap_or_else(|| b.tensor.clone());
    let at = rng.gen_range(0..out.tensor.size());
    if depth_of_node(&out.tensor, at) + donor.depth() > max_depth {
        return mutate(a, max_depth, rng);
    }
    if let Some(node) = out.tensor.node_mut(at) {
        *node = donor;
    }
    if rng.gen_bool(0.5) {
        out.reduce = b.reduce;
    }
    out
}

/// The tensors of one linear layer an expression reads.
#[derive(Debug, Clone)]
pub struct LayerTensors {
    /// Weights, (in, out).
    pub weight: Array2<f32>,
    /// ∂L/∂W on the data batch.
    pub weight_grad: Array2<f32>,
    /// ∂L/∂W on noise.
    pub weight_grad_noise: Array2<f32>,
    /// Output on data, (rows, out).
    pub act: Array2<f32>,
    /// Output gradient on data.
    pub act_grad: Array2<f32>,
    /// Output on noise.
    pub act_noise: Array2<f32>,
    /// Output gradient on noise.
    pub act_grad_noise: Array2<f32>,
    /// Output on noisy data.
    pub act_noisy: Array2<f32>,
    /// Output gradient on noisy data.
    pub act_grad_noisy: Array2<f32>,
}

impl LayerTensors {
    fn get(&self, leaf: Leaf) -> ArrayView2<'_, f32> {
        match leaf {
            Leaf::Weight => self.weight.view(),
            Leaf::WeightGrad => self.weight_grad.view(),
            Leaf::WeightGradNoise => self.weight_grad_noise.view(),
            Leaf::Act => self.act.view(),
            Leaf::ActGrad => self.act_grad.view(),
            Leaf::ActNoise => self.act_noise.view(),
            Leaf::ActGradNoise => self.act_grad_noise.view(),
            Leaf::ActNoisy => self.act_noisy.view(),
            Leaf::ActGradNoisy => self.act_grad_noisy.view(),
        }
    }
}

/// Every linear layer's output and output gradient, in forward order.
#[derive(Default)]
struct Taps {
    outputs: Vec<Array2<f32>>,
    grads: Vec<Array2<f32>>,
}

impl Observer for Taps {
    fn on_forward(&mut self, _: &str, kind: LayerKind, _: ArrayView2<f32>, out: ArrayView2<f32>) {
        if kind == LayerKind::Linear {
            self.outputs.push(out.to_owned());
        }
    }
    fn on_backward(
        &mut self,
        _: &str,
        kind: LayerKind,
        grad: ArrayView2<f32>,
        _: Option<ArrayView2<f32>>,
    ) {
        if kind == LayerKind::Linear {
            self.grads.push(grad.to_owned());
        }
    }
}

/// The tensors of every linear layer of `spec`'s network (seeded, dropout
/// removed) on the first batch of `data`, on Gaussian noise of the same
/// shape and on the data plus noise of σ = [`NOISY_DATA_SIGMA`].
pub fn layer_tensors(
    spec: &ModelSpec,
    data: &ProxyData,
    seed: u64,
) -> Result<Vec<LayerTensors>, ProxyError> {
    let mut net = build(spec, data.inputs(), data.outputs(), seed, false)?;
    let batch = &data.batches()[0];
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x006e_6f69_7365);
    let noise = Array2::from_shape_fn(batch.x.raw_dim(), |_| rng.sample::<f32, _>(StandardNormal));
    let noisy = &batch.x + &noise.mapv(|v| v * NOISY_DATA_SIGMA);
    let mut pass = |x: Array2<f32>| {
        let b = crate::ProxyBatch {
            x,
            y: batch.y.clone(),
        };
        let mut taps = Taps::default();
        loss_backward(&mut net, &b, data.loss(), Some(&mut taps));
        // Backward hooks run last layer first.
        taps.grads.reverse();
        let w = weights(&mut net);
        (taps, w)
    };
    let (on_data, w_data) = pass(batch.x.clone());
    let (on_noise, w_noise) = pass(noise);
    let (on_noisy, _) = pass(noisy);
    let n = w_data.len();
    if [
        on_data.outputs.len(),
        on_data.grads.len(),
        on_noise.grads.len(),
        on_noisy.grads.len(),
    ]
    .iter()
    .any(|&k| k != n)
    {
        return Err(ProxyError::Batch {
            index: 0,
            problem: "a linear layer did not report its activations".into(),
        });
    }
    Ok((0..n)
        .map(|i| LayerTensors {
            weight: w_data[i].value.clone(),
            weight_grad: w_data[i].grad.clone(),
            weight_grad_noise: w_noise[i].grad.clone(),
            act: on_data.outputs[i].clone(),
            act_grad: on_data.grads[i].clone(),
            act_noise: on_noise.outputs[i].clone(),
            act_grad_noise: on_noise.grads[i].clone(),
            act_noisy: on_noisy.outputs[i].clone(),
            act_grad_noisy: on_noisy.grads[i].clone(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Synthetic architectures: `layers` layers of random tensors each.
    fn synthetic(count: usize, seed: u64) -> Vec<Vec<LayerTensors>> {
        let mut rng = SmallRng::seed_from_u64(seed);
        (0..count)
            .map(|_| {
                let layers = rng.gen_range(1..4);
                (0..layers)
                    .map(|_| {
                        let (i, o, r) = (rng.gen_range(2..5), rng.gen_range(2..5), 3);
                        // Each tensor has its own scale, so only an
                        // expression of the right tensors tracks the truth.
                        let mut m = |rows, cols| {
                            let scale = rng.gen_range(0.1f32..2.0);
                            Array2::from_shape_fn((rows, cols), |_| {
                                scale * rng.gen_range(-1.0f32..1.0)
                            })
                        };
                        LayerTensors {
                            weight: m(i, o),
                            weight_grad: m(i, o),
                            weight_grad_noise: m(i, o),
                            act: m(r, o),
                            act_grad: m(r, o),
                            act_noise: m(r, o),
                            act_grad_noise: m(r, o),
                            act_noisy: m(r, o),
                            act_grad_noisy: m(r, o),
                        }
                    })
                    .collect()
            })
            .collect()
    }

    fn snip_like() -> Expression {
        Expression {
            tensor: TensorExpr::Unary(
                Unary::Abs,
                Box::new(TensorExpr::Binary(
                    Binary::Mul,
                    Box::new(TensorExpr::Leaf(Leaf::Weight)),
                    Box::new(TensorExpr::Leaf(Leaf::WeightGrad)),
                )),
            ),
            reduce: Reduce::Sum,
            aggregate: Aggregate::Sum,
        }
    }

    #[test]
    fn score_by_hand() {
        let layer = LayerTensors {
            weight: ndarray::array![[1.0, -2.0]],
            weight_grad: ndarray::array![[3.0, 0.5]],
            weight_grad_noise: ndarray::array![[0.0, 0.0]],
            act: ndarray::array![[1.0], [2.0]],
            act_grad: ndarray::array![[0.0], [0.0]],
            act_noise: ndarray::array![[0.0], [0.0]],
            act_grad_noise: ndarray::array![[0.0], [0.0]],
            act_noisy: ndarray::array![[0.0], [0.0]],
            act_grad_noisy: ndarray::array![[0.0], [0.0]],
        };
        // |1·3| + |−2·0.5| = 4 per layer, two layers summed: 8.
        assert_eq!(snip_like().score(&[layer.clone(), layer.clone()]), 8.0);
        // Protected division by the zero noise gradient stays finite.
        let div = Expression {
            tensor: TensorExpr::Binary(
                Binary::Div,
                Box::new(TensorExpr::Leaf(Leaf::Weight)),
                Box::new(TensorExpr::Leaf(Leaf::WeightGradNoise)),
            ),
            reduce: Reduce::Mean,
            aggregate: Aggregate::Max,
        };
        let v = div.score(std::slice::from_ref(&layer));
        assert!(v.is_finite());
        assert!((v - (1.0 - 2.0) / 2.0 / PROTECT_EPS).abs() < 1e-3 * v.abs());
        // Log of zero is protected too.
        let log = Expression {
            tensor: TensorExpr::Unary(Unary::Log, Box::new(TensorExpr::Leaf(Leaf::ActGrad))),
            reduce: Reduce::Sum,
            aggregate: Aggregate::Sum,
        };
        assert!((log.score(&[layer]) - 2.0 * PROTECT_EPS.ln()).abs() < 1e-9);
        assert_eq!(
            format!("{}", snip_like()),
            "sum_layers(sum(abs(mul(W, dW))))"
        );
    }

    #[test]
    fn degenerate_expressions_get_the_worst_fitness() {
        let archs = synthetic(12, 1);
        let acc: Vec<f64> = (0..archs.len()).map(|i| i as f64).collect();
        // Constant: A − A is 0 on every architecture.
        let constant = Expression {
            tensor: TensorExpr::Binary(
                Binary::Sub,
                Box::new(TensorExpr::Leaf(Leaf::Act)),
                Box::new(TensorExpr::Leaf(Leaf::Act)),
            ),
            reduce: Reduce::Sum,
            aggregate: Aggregate::Sum,
        };
        assert_eq!(fitness(&constant, &archs, &acc), WORST_FITNESS);
        // Infinite: 1/(W − W) is 1/ε = 1e8 per element, squared
        // six times it overflows to +inf.
        let mut t = TensorExpr::Unary(
            Unary::Inv,
            Box::new(TensorExpr::Binary(
                Binary::Sub,
                Box::new(TensorExpr::Leaf(Leaf::Weight)),
                Box::new(TensorExpr::Leaf(Leaf::Weight)),
            )),
        );
        for _ in 0..6 {
            t = TensorExpr::Unary(Unary::Square, Box::new(t));
        }
        let infinite = Expression {
            tensor: t,
            reduce: Reduce::Sum,
            aggregate: Aggregate::Sum,
        };
        assert_eq!(infinite.score(&archs[0]), f64::INFINITY);
        assert_eq!(fitness(&infinite, &archs, &acc), WORST_FITNESS);
        // Shapes mixed by hand: NaN, worst.
        let mixed = Expression {
            tensor: TensorExpr::Binary(
                Binary::Add,
                Box::new(TensorExpr::Leaf(Leaf::Weight)),
                Box::new(TensorExpr::Leaf(Leaf::Act)),
            ),
            reduce: Reduce::Sum,
            aggregate: Aggregate::Sum,
        };
        assert_eq!(mixed.tensor.shape(), None);
        assert_eq!(fitness(&mixed, &archs, &acc), WORST_FITNESS);
        // Random expressions never panic and are well formed.
        let mut rng = SmallRng::seed_from_u64(2);
        for _ in 0..200 {
            let e = Expression::random(&mut rng, 5);
            assert!(e.tensor.shape().is_some());
            let f = fitness(&e, &archs, &acc);
            assert!(f == WORST_FITNESS || (-1.0..=1.0).contains(&f));
            let m = mutate(&e, 5, &mut rng);
            assert!(m.tensor.shape().is_some() && m.tensor.depth() <= 5);
        }
    }

    #[test]
    fn evolution_recovers_a_known_expression() {
        // Accuracy is a monotone function of a snip-like score: the best
        // possible τ is 1, and evolution must find an expression at least
        // that close (random search of the same count does worse).
        let archs = synthetic(40, 3);
        let truth = snip_like();
        let acc: Vec<f64> = archs.iter().map(|a| truth.score(a).ln()).collect();
        assert_eq!(fitness(&truth, &archs, &acc), 1.0);
        // Over seeds: a local optimum near τ = 0.9 (|dW| for dW) exists,
        // so not every seed escapes it; at least half must reach τ = 1.
        let settings = |seed| EvolveSettings {
            population: 60,
            generations: 60,
            seed,
            ..EvolveSettings::default()
        };
        let results: Vec<EvolveResult> = (0..8)
            .map(|seed| evolve(&archs, &acc, &settings(seed)))
            .collect();
        let exact = results.iter().filter(|r| r.fitness >= 0.999).count();
        assert!(
            exact >= 4 && results.iter().all(|r| r.fitness >= 0.9),
            "τ per seed: {:?}",
            results.iter().map(|r| r.fitness).collect::<Vec<_>>()
        );
        for r in &results {
            // History never decreases (elitism).
            assert!(r.history.windows(2).all(|w| w[1] >= w[0]));
        }
        // Seeded.
        let again = evolve(&archs, &acc, &settings(3));
        assert_eq!(again.best, results[3].best);
    }

    #[test]
    fn fitness_over_tasks_is_the_mean_and_degenerate_anywhere_is_worst() {
        let archs = synthetic(12, 5);
        let truth = snip_like();
        let up: Vec<f64> = archs.iter().map(|a| truth.score(a)).collect();
        let down: Vec<f64> = up.iter().map(|v| -v).collect();
        let both = [
            RankTask {
                archs: &archs,
                accuracy: &up,
            },
            RankTask {
                archs: &archs,
                accuracy: &down,
            },
        ];
        // τ = 1 on one, −1 on the other.
        assert_eq!(fitness_on(&truth, &both[..1]), 1.0);
        assert_eq!(fitness_on(&truth, &both), 0.0);
        assert_eq!(fitness_on(&truth, &[]), WORST_FITNESS);
        let constant: Vec<f64> = vec![0.5; archs.len()];
        let with_constant = [
            both[0],
            RankTask {
                archs: &archs,
                accuracy: &constant,
            },
        ];
        assert_eq!(fitness_on(&truth, &with_constant), WORST_FITNESS);
    }

    #[test]
    fn a_resumed_run_continues_as_an_uninterrupted_one() {
        let archs = synthetic(20, 7);
        let truth = snip_like();
        let acc: Vec<f64> = archs.iter().map(|a| truth.score(a).ln()).collect();
        let (search_archs, valid_archs) = archs.split_at(12);
        let (search_acc, valid_acc) = acc.split_at(12);
        let search = [RankTask {
            archs: search_archs,
            accuracy: search_acc,
        }];
        let validation = [RankTask {
            archs: valid_archs,
            accuracy: valid_acc,
        }];
        let settings = EvolveSettings {
            population: 16,
            generations: 6,
            seed: 9,
            ..EvolveSettings::default()
        };
        let mut whole = Evolution::<Expression>::start(&settings, &search, &validation);
        while !whole.finished() {
            whole.step(&search, &validation);
        }
        let mut first = Evolution::<Expression>::start(&settings, &search, &validation);
        for _ in 0..3 {
            first.step(&search, &validation);
        }
        let text = first.checkpoint();
        let mut resumed = Evolution::<Expression>::resume(&settings, &text).expect("resume");
        assert_eq!(resumed.generation(), 3);
        while !resumed.finished() {
            resumed.step(&search, &validation);
        }
        assert_eq!(resumed.bests(), whole.bests());
        let (r, w) = (resumed.result(), whole.result());
        assert_eq!((r.best, r.generation), (w.best.clone(), w.generation));
        // The pick is the generation best with the highest validation τ.
        let top = whole
            .bests()
            .iter()
            .map(|b| b.validation.expect("validation given"))
            .fold(f64::NEG_INFINITY, f64::max);
        assert_eq!(w.validation, Some(top));
        // More generations may be asked of a finished run.
        let longer = EvolveSettings {
            generations: 8,
            ..settings.clone()
        };
        let mut more =
            Evolution::<Expression>::resume(&longer, &whole.checkpoint()).expect("resume longer");
        assert!(!more.finished());
        more.step(&search, &validation);
        assert_eq!(more.generation(), 7);
    }

    #[test]
    fn a_checkpoint_of_other_settings_or_bad_text_is_refused_with_its_line() {
        let archs = synthetic(8, 2);
        let acc: Vec<f64> = (0..archs.len()).map(|i| i as f64).collect();
        let search = [RankTask {
            archs: &archs,
            accuracy: &acc,
        }];
        let settings = EvolveSettings {
            population: 6,
            generations: 2,
            ..EvolveSettings::default()
        };
        let run = Evolution::<Expression>::start(&settings, &search, &[]);
        let text = run.checkpoint();
        let other = EvolveSettings {
            seed: 1,
            ..settings.clone()
        };
        assert!(matches!(
            Evolution::<Expression>::resume(&other, &text),
            Err(CheckpointError::Settings { .. })
        ));
        let broken = text.replacen("member ", "member x", 1);
        let line = text.lines().position(|l| l.starts_with("member ")).unwrap() + 1;
        match Evolution::<Expression>::resume(&settings, &broken) {
            Err(CheckpointError::Line { line: l, .. }) => assert_eq!(l, line),
            other => panic!("{other:?}"),
        }
        let truncated: String = text.lines().take(4).map(|l| format!("{l}\n")).collect();
        assert!(Evolution::<Expression>::resume(&settings, &truncated).is_err());
    }

    #[test]
    fn layer_tensors_are_the_networks_own() {
        use crate::probe;
        use crate::{LossKind, ProxyBatch};
        use nn_plan::{Activation, Backbone, Norm};
        use tabular_nn::model::layers::Layer;
        let spec = ModelSpec {
            backbone: Backbone::Mlp { widths: vec![5, 4] },
            activation: Activation::Relu,
            dropout: 0.0,
            norm: Norm::Batch,
        };
        let mut rng = SmallRng::seed_from_u64(6);
        let batch = ProxyBatch {
            x: Array2::from_shape_fn((8, 3), |_| rng.gen_range(-1.0f32..1.0)),
            y: ndarray::Array1::from_shape_fn(8, |i| (i % 2) as f32),
        };
        let data = ProxyData::new(vec![batch.clone()], LossKind::SoftmaxCrossEntropy, 2).unwrap();
        let layers = layer_tensors(&spec, &data, 9).unwrap();
        // Three linear layers: 3→5, 5→4, 4→2.
        let dims: Vec<_> = layers.iter().map(|l| l.weight.dim()).collect();
        assert_eq!(dims, vec![(3, 5), (5, 4), (4, 2)]);
        // Weights and data gradients are those of one loss pass, and the
        // last layer's output is the network's output.
        let mut net = probe::build(&spec, 3, 2, 9, false).unwrap();
        probe::loss_backward(&mut net, &batch, data.loss(), None);
        for (l, w) in layers.iter().zip(probe::weights(&mut net)) {
            assert_eq!(l.weight, w.value);
            assert_eq!(l.weight_grad, w.grad);
            assert_eq!(l.act.nrows(), 8);
        }
        assert_eq!(layers[2].act, net.body.output().to_owned());
        // Noise differs from data.
        assert_ne!(layers[0].act_noise, layers[0].act);
        assert_ne!(layers[0].weight_grad_noise, layers[0].weight_grad);
    }

    #[test]
    fn expressions_print_and_parse_back() {
        let text = "sum_layers(sum(abs(mul(W, dW))))";
        let e: Expression = text.parse().expect("parses");
        assert_eq!(e, snip_like());
        assert_eq!(e.to_string(), text);
        let mut rng = SmallRng::seed_from_u64(8);
        for _ in 0..100 {
            let e = Expression::random(&mut rng, 5);
            assert_eq!(e.to_string().parse::<Expression>(), Ok(e.clone()), "{e}");
        }
        for bad in [
            "sum_layers(sum(abs(mul(W, A))))",
            "sum_layers(sum(W)",
            "total(sum(W))",
            "sum_layers(sum(W)) extra",
            "sum_layers(sum(foo(W)))",
        ] {
            assert!(bad.parse::<Expression>().is_err(), "{bad}");
        }
        let err = "sum_layers(sum(foo(W)))".parse::<Expression>().unwrap_err();
        assert_eq!(err.at, 15);
    }
}
