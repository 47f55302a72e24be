using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Abstractions;

/// <summary>
/// A merge method. It sees one tensor at a time (never files), writes the merged values into
/// <see cref="MergeTensorRequest.Output"/> in place, and honours the per-model <see cref="MergeTensorRequest.Weights"/>,
/// which is what lets a decorator steer any strategy.
/// </summary>
public interface IMergeStrategy : IPluginComponent
{
    /// <summary>
    /// What inputs the strategy accepts (base model, model count, randomness, blocking, bfloat16). The host reads it while
    /// planning and running a merge, so it must return the same value over the strategy's lifetime.
    /// </summary>
    StrategyTraits Traits { get; }

    /// <summary>
    /// Merges one tensor. Inputs are float32 (or the compute dtype the host chose; bfloat16 as stored when the strategy
    /// declares <see cref="StrategyTraits.AcceptsBFloat16"/>) on the compute device;
    /// the strategy must not keep references to them after returning, and must not modify them.
    /// The host may call Merge concurrently for different tensors (one worker thread each, each with its own
    /// <see cref="MergeTensorRequest.Scratch"/>), so a strategy must keep no mutable per-call state in fields.
    /// When <see cref="StrategyTraits.Elementwise"/> is true the request may be one row block of a larger tensor
    /// (see <see cref="MergeTensorRequest.ElementStart"/>).
    /// </summary>
    /// <param name="request">The tensor's inputs, weights, parameters, output buffer and scratch; valid only during the call.</param>
    void Merge(MergeTensorRequest request);
}

/// <summary>Input requirements of a strategy.</summary>
/// <param name="RequiresBaseModel">True for task-vector methods (they merge deltas from the base).</param>
/// <param name="MinModels">Fewest models besides the base.</param>
/// <param name="MaxModels">Most models besides the base (null: no limit).</param>
/// <param name="UsesRandomness">True when the result depends on <see cref="MergeTensorRequest.Seed"/>.</param>
/// <param name="Elementwise">
/// True when each output element depends only on the same element of the inputs (and the parameters), so the host
/// may hand the strategy a large tensor in row blocks to bound memory. False for methods that look at the whole
/// tensor (magnitude top-k, cosine similarity): they get whole tensors, unless they implement
/// <see cref="IStreamingMergeStrategy"/> (contract 1.1), which lets the host stream them in blocks as well.
/// </param>
public sealed record StrategyTraits(bool RequiresBaseModel, int MinModels = 1, int? MaxModels = null, bool UsesRandomness = false, bool Elementwise = false)
{
    /// <summary>
    /// True when the strategy takes bfloat16 tensors as they are stored (contract 1.2): inputs and
    /// <see cref="MergeTensorRequest.Output"/> contiguous bfloat16 on the CPU, merged as if every input were widened to
    /// float32, merged in float32, and the result rounded once into Output by <see cref="BFloat16Bits.Narrow"/>. That is
    /// bit for bit what the host's own widen, merge and round gives, so the host may pass bfloat16 through and skip both
    /// conversions (half the memory traffic per element). A host hands bfloat16 tensors only when the inputs and the
    /// output are stored as bfloat16 and the compute device is the CPU; other strategies keep getting float32.
    /// </summary>
    public bool AcceptsBFloat16 { get; init; }

    /// <summary>
    /// True when the strategy reproduces mergekit's arithmetic in a half-precision compute dtype (contract 1.3): given a
    /// request whose <see cref="MergeTensorRequest.ComputeDType"/> is bfloat16 or float16, it rounds every intermediate
    /// result to that dtype where mergekit's method does (each torch operation on tensors of that dtype rounds its result),
    /// so a config with <c>dtype: bfloat16</c> gives mergekit's bytes. A host hands such a strategy whole tensors (or
    /// elementwise blocks) in that case, streamed blocks only in bfloat16 and only when the strategy declares
    /// <see cref="StreamsBFloat16Rounding"/>: mergekit's whole-tensor statistics are taken on the rounded values.
    /// Strategies without it compute in float32 and their result is rounded once (more accurate, and it can differ from
    /// mergekit's by one unit in the last place); the host says so in its log.
    /// </summary>
    public bool RoundsIntermediates { get; init; }

    /// <summary>
    /// True when the strategy's sessions (<see cref="IStreamingMergeStrategy"/>) also round as
    /// <see cref="RoundsIntermediates"/> asks for a bfloat16 compute dtype (contract 1.6): told it by
    /// <see cref="MergeTensorInfo.ComputeDType"/>, a session gathers mergekit's whole-tensor statistics of the rounded
    /// values over the blocks, and its blocks' results have the whole-tensor merge's bits whatever the block size. A host
    /// may then stream tensors whose compute dtype is bfloat16; float16 ones still go whole.
    /// </summary>
    public bool StreamsBFloat16Rounding { get; init; }

    /// <summary>
    /// True when mergekit's method returns float32 tensors whatever the dtype of its inputs (contract 1.3; arcee_fusion
    /// multiplies by a float32 mask): the host then writes the merged tensors in float32 unless an output dtype is asked
    /// for (<c>out_dtype</c>, <c>--dtype</c>), as mergekit does. config.json's <c>torch_dtype</c> still says
    /// <c>out_dtype</c>, else <c>dtype</c>, as mergekit writes it.
    /// </summary>
    public bool WritesFloat32 { get; init; }

    /// <summary>
    /// What a merge with <paramref name="hasBase"/> and <paramref name="modelCount"/> models besides the base breaks of
    /// these traits, in one wording: the host checks a config and a plan with it, and a plugin may check a request with it
    /// (every message starts with <c>merge method '<paramref name="method"/>'</c>). Empty when the counts fit.
    /// </summary>
    public IReadOnlyList<string> CountProblems(string method, bool hasBase, int modelCount)
    {
        var problems = new List<string>();
        if (RequiresBaseModel && !hasBase)
        {
            problems.Add($"merge method '{method}' needs a base model (base_model), and none is given");
        }
        if (modelCount < MinModels)
        {
            problems.Add($"merge method '{method}' needs at least {MinModels} model(s) besides the base, got {modelCount}");
        }
        if (MaxModels is { } max && modelCount > max)
        {
            problems.Add($"merge method '{method}' takes at most {max} model(s) besides the base, got {modelCount}");
        }
        return problems;
    }
}

/// <summary>One tensor's merge: inputs, weights, parameters, and the buffer to write the result into.</summary>
public sealed record MergeTensorRequest
{
    /// <summary>The tensor's name in the Hugging Face layout (for example <c>model.layers.3.mlp.up_proj.weight</c>).</summary>
    public required string TensorName { get; init; }

    /// <summary>The tensor's layer group (<see cref="LayerGroups.Of"/>).</summary>
    public required string LayerGroup { get; init; }

    /// <summary>
    /// Each model's own layer group for this tensor, in the order of <see cref="ModelNames"/> (contract 1.5), or null when
    /// every model's tensor lies in <see cref="LayerGroup"/>. A frankenmerge (several slices) reads output layer j of a
    /// slice from layer <c>layer_range[0] + j</c> of each source, so a model's own group can differ from the output's: a
    /// decorator that weighs models per layer group (Sens-Merging) uses the model's own group.
    /// </summary>
    public IReadOnlyList<string>? ModelLayerGroups { get; init; }

    /// <summary>The base model's tensor, or null when the merge has no base model.</summary>
    public Tensor? Base { get; init; }

    /// <summary>The input models' tensors (experts; the base is not among them), all of the same shape.</summary>
    public required IReadOnlyList<Tensor> Models { get; init; }

    /// <summary>The names of the input models, in the order of <see cref="Models"/>.</summary>
    public required IReadOnlyList<string> ModelNames { get; init; }

    /// <summary>
    /// One weight per model for this tensor, in the order of <see cref="Models"/>: the configured weight times any
    /// decorator coefficient. The configured weight is the strategy's <c>weight</c> parameter (per model, layer schedules
    /// evaluated) when the strategy declares one; when it declares no <c>weight</c> parameter the configured weight is 1.0
    /// for every model, so Weights holds exactly the decorator's coefficient (for example Sens-Merging's c_i for the
    /// tensor's layer group), or 1.0 for every model when no decorator is applied. A strategy that ignores Weights cannot
    /// be steered by decorators.
    /// </summary>
    public required IReadOnlyList<double> Weights { get; init; }

    /// <summary>The strategy's parameters for this tensor (defaults applied, layer schedules evaluated).</summary>
    public required ResolvedParameters Parameters { get; init; }

    /// <summary>
    /// Where the result goes: same shape as the inputs, preallocated by the host (float32, or bfloat16 under
    /// <see cref="StrategyTraits.AcceptsBFloat16"/>), contents undefined on entry; write every element in place
    /// (for example with <c>copy_</c> or an <c>out</c> overload). Owned by the host: do not dispose or keep it.
    /// </summary>
    public required Tensor Output { get; init; }

    /// <summary>
    /// Temporary tensors of the same shape, pooled by the host; returned when the merge of this tensor (or block) ends.
    /// Rented tensors are owned by the scratch: see <see cref="ITensorScratch"/>.
    /// </summary>
    public required ITensorScratch Scratch { get; init; }

    /// <summary>
    /// A seed for this tensor (or row block), derived from the run's seed, the tensor name and the block index, so results
    /// do not depend on thread count or scheduling. Use <c>Seed + modelIndex</c> for per-model streams.
    /// </summary>
    public long Seed { get; init; }

    /// <summary>
    /// The tensor's seed: the same in every block of the tensor (it equals <see cref="Seed"/> of block 0). A strategy
    /// that keys its random stream by <c>TensorSeed</c> and the element's position in the whole tensor
    /// (<see cref="ElementStart"/> + index) gives results that do not depend on the host's block size. Set by hosts of
    /// contract 1.1 and later.
    /// </summary>
    public long TensorSeed { get; init; }

    /// <summary>The transformer block the tensor belongs to (<see cref="LayerGroups.BlockIndex"/>), or -1 for embeddings, norm and head.</summary>
    public int LayerIndex { get; init; } = -1;

    /// <summary>Number of transformer blocks in the model (0 when unknown).</summary>
    public int LayerCount { get; init; }

    /// <summary>
    /// The dtype whose arithmetic the merge reproduces (contract 1.3): mergekit computes in the config's <c>dtype</c> (or,
    /// without one, the inputs' stored dtype), rounding after every operation. Float32 unless that dtype is bfloat16 or
    /// float16 and the user did not ask for float32 compute. The inputs and <see cref="Output"/> keep their buffer dtype
    /// (float32, or bfloat16 as stored); their values are representable in this dtype. Only strategies that declare
    /// <see cref="StrategyTraits.RoundsIntermediates"/> act on it; hosts before 1.3 leave it float32.
    /// </summary>
    public ScalarType ComputeDType { get; init; } = ScalarType.Float32;

    /// <summary>True when <see cref="ComputeDType"/> is bfloat16 or float16: mergekit's arithmetic rounds every intermediate.</summary>
    public bool ComputesInHalfPrecision => ComputeDType is ScalarType.BFloat16 or ScalarType.Float16;

    /// <summary>
    /// Row-major index, within the whole tensor, of the first element of <see cref="Output"/> (and of the inputs) when the
    /// host passes a block; 0 for whole tensors. Set by hosts of contract 1.1 and later.
    /// </summary>
    public long ElementStart { get; init; }
}

/// <summary>
/// Pooled temporary tensors with the shape of the tensor being merged, on the compute device. There are two overloads:
/// <see cref="Rent(ScalarType)"/> (the request's shape) and <see cref="Rent(long[], ScalarType)"/> (any shape); both
/// default to float32. Each Rent during one Merge (or Observe) call returns a distinct buffer, reused by later calls, so
/// temporaries cost no allocation after the first tensors. Rented tensors are owned by the scratch: never dispose them,
/// and do not rent them inside a TorchSharp dispose scope that you dispose (that would dispose the pooled buffer); they
/// are valid only until the call that rented them returns. One scratch serves one worker thread: do not share it.
/// </summary>
public interface ITensorScratch
{
    /// <summary>A tensor of the request's shape and the given dtype, contents undefined. Owned by the scratch: do not dispose it.</summary>
    /// <param name="dtype">The element type; float32 by default.</param>
    /// <returns>A view of a pooled buffer, valid until the current call returns.</returns>
    Tensor Rent(ScalarType dtype = ScalarType.Float32);

    /// <summary>A tensor of the given shape and dtype, contents undefined. Owned by the scratch: do not dispose it.</summary>
    /// <param name="shape">The shape wanted (for example a reduced <c>[rows, 1]</c> or a per-model statistic).</param>
    /// <param name="dtype">The element type; float32 by default.</param>
    /// <returns>A view of a pooled buffer, valid until the current call returns.</returns>
    Tensor Rent(long[] shape, ScalarType dtype = ScalarType.Float32);
}
