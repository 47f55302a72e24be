using SensMerging.Abstractions;

namespace SensMerging.Strategies.Common;

/// <summary>How a task vector is thinned before merging.</summary>
public enum SparsificationMethod
{
    /// <summary>Keep every entry (task arithmetic).</summary>
    None,

    /// <summary>Keep the <c>density</c> fraction of entries with the largest magnitude (TIES).</summary>
    Magnitude,

    /// <summary>Keep each entry with probability <c>density</c>, optionally rescaling survivors by 1/density (DARE).</summary>
    Random,

    /// <summary>Drop the largest <c>gamma</c> fraction and the smallest entries so that <c>density</c> remains (Model Breadcrumbs).</summary>
    MagnitudeOutliers,

    /// <summary>
    /// Keep each entry with a probability that grows with its magnitude's rank in its row, from density - epsilon (smallest)
    /// to density + epsilon (largest) (DELLA's MagPrune, mergekit's della_magprune). Needs whole rows: not streamed.
    /// </summary>
    RankedMagnitudeSampling,
}

/// <summary>How conflicting task vectors are reconciled.</summary>
public enum ConsensusMethod
{
    /// <summary>Plain weighted sum.</summary>
    None,

    /// <summary>TIES sign election: the sign of the sum of weighted deltas wins; disagreeing contributions are dropped.</summary>
    Sum,
}

/// <summary>
/// One method of generalized task arithmetic (mergekit's family of task_arithmetic, ties, dare_*, breadcrumbs*): the
/// method name, the sparsification and consensus it uses, its defaults, what it does and where it is defined.
/// <see cref="All"/> is the family's table: the family plugin registers one strategy per row, so a new member of the
/// family is one row here.
/// </summary>
public sealed record TaskArithmeticVariant(
    string Name,
    SparsificationMethod Sparsification,
    ConsensusMethod Consensus,
    bool DefaultNormalize,
    string Description,
    string Reference,
    bool DefaultRescale = false)
{
    public static TaskArithmeticVariant TaskArithmetic { get; } = new(
        "task_arithmetic", SparsificationMethod.None, ConsensusMethod.None, DefaultNormalize: false,
        "Base plus lambda times the weighted sum of the task vectors (x_i - base).",
        "https://arxiv.org/abs/2212.04089");

    public static TaskArithmeticVariant Ties { get; } = new(
        "ties", SparsificationMethod.Magnitude, ConsensusMethod.Sum, DefaultNormalize: true,
        "TIES: keep the top-density task-vector entries by magnitude, elect a sign per entry, average the agreeing contributions.",
        "https://arxiv.org/abs/2306.01708");

    public static TaskArithmeticVariant DareLinear { get; } = new(
        "dare_linear", SparsificationMethod.Random, ConsensusMethod.None, DefaultNormalize: false,
        "DARE: drop task-vector entries at random (probability 1 - density), rescale survivors, then add the weighted sum.",
        "https://arxiv.org/abs/2311.03099", DefaultRescale: true);

    public static TaskArithmeticVariant DareTies { get; } = new(
        "dare_ties", SparsificationMethod.Random, ConsensusMethod.Sum, DefaultNormalize: false,
        "DARE random drop and rescale, then TIES sign election over the weighted task vectors.",
        "https://arxiv.org/abs/2311.03099", DefaultRescale: true);

    public static TaskArithmeticVariant Breadcrumbs { get; } = new(
        "breadcrumbs", SparsificationMethod.MagnitudeOutliers, ConsensusMethod.None, DefaultNormalize: false,
        "Model Breadcrumbs: drop the largest gamma and the smallest entries of each task vector, keep the band, then add the weighted sum.",
        "https://arxiv.org/abs/2312.06795");

    public static TaskArithmeticVariant BreadcrumbsTies { get; } = new(
        "breadcrumbs_ties", SparsificationMethod.MagnitudeOutliers, ConsensusMethod.Sum, DefaultNormalize: false,
        "Model Breadcrumbs band selection followed by TIES sign election.",
        "https://arxiv.org/abs/2312.06795");

    public static TaskArithmeticVariant Della { get; } = new(
        "della", SparsificationMethod.RankedMagnitudeSampling, ConsensusMethod.Sum, DefaultNormalize: true,
        "DELLA: drop task-vector entries at random with probabilities ranked by magnitude within each row, rescale to the L1 norm, then TIES sign election.",
        "https://arxiv.org/abs/2406.11617", DefaultRescale: true);

    public static TaskArithmeticVariant DellaLinear { get; } = new(
        "della_linear", SparsificationMethod.RankedMagnitudeSampling, ConsensusMethod.None, DefaultNormalize: false,
        "DELLA's magnitude-ranked random drop and L1 rescale, then the weighted sum of the task vectors.",
        "https://arxiv.org/abs/2406.11617", DefaultRescale: true);

    /// <summary>The family's table, in the order the methods are listed.</summary>
    public static IReadOnlyList<TaskArithmeticVariant> All { get; } =
        [TaskArithmetic, Ties, DareLinear, DareTies, Breadcrumbs, BreadcrumbsTies, Della, DellaLinear];

    /// <summary>
    /// True when the method streams (block by block, <see cref="IStreamingMergeStrategy"/>); DELLA ranks magnitudes
    /// within whole rows and takes whole tensors.
    /// </summary>
    public bool Streams => Sparsification != SparsificationMethod.RankedMagnitudeSampling;

    /// <summary>
    /// Each output element depends only on the same element of the inputs when no whole-tensor statistic is involved:
    /// plain sums and per-element sign election. Every sparsifying method needs one (magnitude ranks, or the L1 norms
    /// of mergekit's <c>rescale</c>, on by default for DARE), so only task_arithmetic is elementwise.
    /// </summary>
    public bool Elementwise => Sparsification is SparsificationMethod.None;

    /// <summary>
    /// Every variant takes bfloat16 as stored (<see cref="StrategyTraits.AcceptsBFloat16"/>): its CPU kernels widen in
    /// registers and round once (<see cref="TaskArithmeticSession"/>).
    /// </summary>
    public StrategyTraits Traits => new(
        RequiresBaseModel: true,
        MinModels: 1,
        MaxModels: null,
        UsesRandomness: Sparsification is SparsificationMethod.Random or SparsificationMethod.RankedMagnitudeSampling,
        Elementwise: Elementwise)
    {
        // The streaming methods' kernels widen bfloat16 in registers and round once; DELLA's whole-tensor path computes
        // with libtorch in the tensors' dtype, so the host widens bfloat16 to float32 for it.
        AcceptsBFloat16 = Streams,
        // With a half-precision compute dtype every variant computes as mergekit does in it (HalfPrecisionTaskArithmetic).
        RoundsIntermediates = true,
        // bfloat16 streams through the fused passes' session (DARE and the L1 rescale included: its norms are summed in
        // position-keyed lanes); DELLA's row ranks stay whole.
        StreamsBFloat16Rounding = Streams,
    };

    /// <summary>The parameters the variant reads, with mergekit's names and defaults.</summary>
    public IReadOnlyList<ParameterSpec> BuildParameters()
    {
        var specs = new List<ParameterSpec>
        {
            ParameterSpec.Float("weight", 1.0, ParameterScope.PerModel, "Weight of the model's task vector."),
            ParameterSpec.Float("density", 1.0, ParameterScope.PerModel,
                Sparsification == SparsificationMethod.None
                    ? "Accepted and ignored, as in mergekit (task_arithmetic keeps every entry)."
                    : "Fraction of the task vector's entries kept.",
                min: 0, max: 1),
        };
        if (Sparsification == SparsificationMethod.MagnitudeOutliers)
        {
            specs.Add(ParameterSpec.Float("gamma", 0.01, ParameterScope.PerModel, "Fraction of the largest-magnitude entries removed as outliers.", min: 0, max: 1));
        }
        if (Sparsification == SparsificationMethod.RankedMagnitudeSampling)
        {
            specs.Add(ParameterSpec.Float("epsilon", 0.15, ParameterScope.PerModel,
                "Half-width of the keep probabilities around density, from the smallest to the largest magnitude of a row (density +- epsilon must lie in (0, 1)).",
                min: 0, max: 1));
        }
        specs.Add(ParameterSpec.Float("lambda", 1.0, ParameterScope.Global, "Scale applied to the merged task vector before adding it to the base."));
        specs.Add(ParameterSpec.Boolean("normalize", DefaultNormalize, ParameterScope.Global,
            Consensus == ConsensusMethod.None
                ? "Divide the merged task vector by the sum of the weights."
                : "Divide each entry by the sum of the weights of the contributions kept there."));
        specs.Add(ParameterSpec.Boolean("rescale", DefaultRescale, ParameterScope.Global,
            Sparsification == SparsificationMethod.None
                ? "Accepted for mergekit compatibility; no effect (nothing is sparsified)."
                : "Rescale each sparsified task vector so that its L1 norm over the tensor is what it was before sparsifying (mergekit)."));
        specs.Add(ParameterSpec.Boolean("int8_mask", false, ParameterScope.Global,
            "Accepted for mergekit compatibility; masks are stored in the compute dtype here, the result is the same."));
        return specs;
    }
}
