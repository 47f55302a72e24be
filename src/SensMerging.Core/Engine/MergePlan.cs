using SensMerging.Abstractions;
using SensMerging.Core.Models;
using SensMerging.Core.SafeTensors;

namespace SensMerging.Core.Engine;

/// <summary>An input model of a merge: the name configs and cards use, and the opened folder.</summary>
public sealed record MergeInput(string Name, ModelFolder Folder);

/// <summary>
/// A fully resolved merge: which models, which strategy, and how parameters and weights are found per tensor. The
/// config layer builds it; the engine validates it against the files before writing anything.
/// </summary>
public sealed record MergePlan
{
    /// <summary>The base model, or null for methods without one.</summary>
    public MergeInput? Base { get; init; }

    /// <summary>The experts (the base is not among them).</summary>
    public required IReadOnlyList<MergeInput> Models { get; init; }

    /// <summary>The merge method.</summary>
    public required IMergeStrategy Strategy { get; init; }

    /// <summary>
    /// Parameters for a tensor: <c>(tensorName, modelCount) =&gt; parameters</c>. Called once per tensor during
    /// validation (so an out-of-range value fails before any output). Null: <see cref="ResolvedParameters.Empty"/>.
    /// </summary>
    public Func<string, int, ResolvedParameters>? ParameterResolver { get; init; }

    /// <summary>Configured weight per expert (null: 1 each).</summary>
    public IReadOnlyList<double>? Weights { get; init; }

    /// <summary>
    /// Optional per-tensor override: <c>(tensorName, configuredWeights) =&gt; weights</c> (a decorator's coefficients).
    /// Must return one weight per expert.
    /// </summary>
    public Func<string, IReadOnlyList<double>, IReadOnlyList<double>>? WeightOverride { get; init; }

    /// <summary>
    /// mergekit's <c>dtype</c>: every floating-point input tensor is cast to it (rounded, as <c>torch.Tensor.to</c> does)
    /// before the strategy sees it, and the output is written in it unless <see cref="OutputDType"/> says otherwise.
    /// Null: each tensor keeps its stored dtype, and inputs stored in different floating-point dtypes are cast to the
    /// wider one (float32 for bfloat16 with float16), as torch's type promotion does. When the dtype a tensor is cast to
    /// is bfloat16 or float16 the merge reproduces mergekit's arithmetic in it (<see cref="MergeTensorRequest.ComputeDType"/>):
    /// strategies that declare <see cref="StrategyTraits.RoundsIntermediates"/> round every intermediate as mergekit
    /// does; the others compute in float32 and round once (see docs/plugins.md, "dtype").
    /// </summary>
    public SafeTensorsDType? CastDType { get; init; }

    /// <summary>
    /// Compute in float32 and round the result once, even when the inputs are cast to a half-precision dtype (the
    /// <c>--compute-dtype float32</c> opt-in): more accurate than mergekit's per-operation rounding, and so not its bytes.
    /// </summary>
    public bool ComputeInFloat32 { get; init; }

    /// <summary>mergekit's <c>out_dtype</c>: the dtype floating-point tensors are written in (null: <see cref="CastDType"/>, else each tensor's own).</summary>
    public SafeTensorsDType? OutputDType { get; init; }

    /// <summary>Run seed; per-tensor and per-block seeds derive from it (<see cref="StableSeed"/>).</summary>
    public long Seed { get; init; }

    /// <summary>
    /// The output tensors and where each is read from, for a layout other than "every tensor of the reference model,
    /// read under the same name from every input": a frankenmerge (mergekit's multi-slice configs), whose output block j
    /// is block i of some model. Null: the usual layout. With a layout <see cref="Base"/> is null, <see cref="Models"/>
    /// lists every model any tensor reads besides the base (for the card), each tensor carries its own sources (and base),
    /// parameters and weights
    /// (<see cref="ParameterResolver"/>, <see cref="WeightOverride"/> and <see cref="Weights"/> are not used), and the
    /// output config.json's <c>num_hidden_layers</c> is the number of output blocks.
    /// </summary>
    public IReadOnlyList<PlannedTensor>? Layout { get; init; }

    /// <summary>
    /// The output vocabulary (mergekit's <c>tokenizer_source</c>): the embedding and lm_head inputs become the models' rows
    /// in its token order (<see cref="Tokenizers.EmbeddingRows"/>), config.json's <c>vocab_size</c> is its padded size, and
    /// its tokenizer is written instead of copying one. Null: tokenizer files are copied, and embeddings of different sizes
    /// are merged on their common sub-matrix.
    /// </summary>
    public Tokenizers.OutputVocabulary? Vocabulary { get; init; }
}

/// <summary>
/// One output tensor of a <see cref="MergePlan.Layout"/>: its name, its sources in merge order (the base not among them),
/// its parameters and weights (one per source), and where the base model's tensor is read when the merge has one.
/// </summary>
public sealed record PlannedTensor(string Name, IReadOnlyList<PlannedSource> Sources, ResolvedParameters Parameters, IReadOnlyList<double> Weights)
{
    /// <summary>The base model's tensor for this output tensor, or null for a merge without a base.</summary>
    public PlannedSource? Base { get; init; }
}

/// <summary>Where one input of a <see cref="PlannedTensor"/> is read: a tensor of a model, under its own name there.</summary>
public sealed record PlannedSource(MergeInput Model, string TensorName);

/// <summary>Where and how the merged model is written and computed.</summary>
public sealed record MergeOptions
{
    /// <summary>
    /// Default number of elements per row block for elementwise and streamed strategies (256 Ki elements, 1 MiB in F32).
    /// Measured: with 8 Mi-element blocks the engine ran BF16 task_arithmetic at about half the rate (every worker's
    /// buffers far larger than the caches, and hundreds of MB of fresh pages touched per run); 1 Mi -> 256 Ki cut the
    /// read stage of BF16 ties about in half (a block's widened inputs stay in cache for the statistics and merge steps).
    /// Results do not depend on it.
    /// </summary>
    public const long DefaultBlockElements = 1L << 18;

    /// <summary>Default per-worker buffer size for whole-tensor strategies (8 Mi elements).</summary>
    public const long DefaultWholeTensorWorkerElements = 8L << 20;

    /// <summary>Default shard size, mergekit's <c>5B</c>.</summary>
    public const long DefaultShardSizeBytes = 5_000_000_000;

    /// <summary>The output folder (must be absent or empty unless <see cref="Overwrite"/>).</summary>
    public required string OutputPath { get; init; }

    /// <summary>Replace an existing output folder (only after the new one is complete).</summary>
    public bool Overwrite { get; init; }

    /// <summary>
    /// The temporary folder written before it is moved to <see cref="OutputPath"/>: null for a new
    /// <c>&lt;out&gt;.partial-&lt;random&gt;</c>, or one from <see cref="MergedModelWriter.NewWorkPath"/> that the caller
    /// recorded (the registry names it so that a killed merge's leftovers can be removed).
    /// </summary>
    public string? WorkPath { get; init; }

    /// <summary>Most tensor bytes per shard file.</summary>
    public long ShardSizeBytes { get; init; } = DefaultShardSizeBytes;

    /// <summary>Compute device: <c>cpu</c>, <c>cuda</c> or <c>cuda:N</c>.</summary>
    public string Device { get; init; } = "cpu";

    /// <summary>Tensors (or blocks) processed at once; each worker holds one set of buffers.</summary>
    public int MaxParallelism { get; init; } = Math.Clamp(Environment.ProcessorCount, 1, 2);

    /// <summary>
    /// Elementwise strategies get tensors above this many elements in row blocks of at most this size. Fixed (not
    /// dependent on thread count) so results do not depend on the machine.
    /// </summary>
    public long BlockElements { get; init; } = DefaultBlockElements;

    /// <summary>
    /// Strategies that take whole tensors (neither elementwise nor streaming): tensors up to this many elements are
    /// merged in parallel in each worker's buffers, larger ones one at a time in shared buffers of the largest size.
    /// </summary>
    public long WholeTensorWorkerElements { get; init; } = DefaultWholeTensorWorkerElements;

    /// <summary>
    /// libtorch intra-op threads per worker (set on each worker thread while it runs). 1 by default: the engine gets
    /// its parallelism from workers, and libtorch's thread-pool barriers cost milliseconds per op on a busy machine.
    /// </summary>
    public int TorchThreadsPerWorker { get; init; } = 1;

    /// <summary>Folder whose tokenizer files are copied (null: the base, else the first expert); not used with <see cref="MergePlan.Vocabulary"/>.</summary>
    public string? TokenizerSource { get; init; }

    /// <summary>The chat template written into the output's <c>tokenizer_config.json</c> (resolved by <see cref="Tokenizers.ChatTemplates"/>); null keeps the tokenizer's own.</summary>
    public string? ChatTemplate { get; init; }

    /// <summary>The model card (null: a default card listing method, inputs and parameters).</summary>
    public ModelCard? Card { get; init; }

    /// <summary>Hash output files while writing (SHA-256).</summary>
    public bool ComputeSha256 { get; init; } = true;

    /// <summary>
    /// Problems in the input data are errors (<see cref="MergeDataException"/>, nothing written) instead of warnings
    /// (<see cref="MergeResult.Warnings"/>): NaN or infinite values in an input tensor (the merge stops at the first block
    /// that holds any), tensors of an input that the reference model lacks (found before anything is written).
    /// </summary>
    public bool Strict { get; init; }

    /// <summary>Least time between two progress reports.</summary>
    public TimeSpan ProgressInterval { get; init; } = TimeSpan.FromMilliseconds(100);
}
