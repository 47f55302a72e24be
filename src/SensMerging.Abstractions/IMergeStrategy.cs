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
    /// <summary>What inputs the strategy accepts.</summary>
    StrategyTraits Traits { get; }

    /// <summary>
    /// Merges one tensor. Inputs are float32 (or the compute dtype the host chose; bfloat16 as stored when the strategy
    /// declares <see cref="StrategyTraits.AcceptsBFloat16"/>) on the compute device;
    /// the strategy must not keep references to them after returning, and must not modify them.
    /// </summary>
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
}

/// <summary>One tensor's merge: inputs, weights, parameters, and the buffer to write the result into.</summary>
public sealed record MergeTensorRequest
{
    /// <summary>The tensor's name in the Hugging Face layout (for example <c>model.layers.3.mlp.up_proj.weight</c>).</summary>
    public required string TensorName { get; init; }

    /// <summary>The tensor's layer group (<see cref="LayerGroups.Of"/>).</summary>
    public required string LayerGroup { get; init; }

    /// <summary>The base model's tensor, or null when the merge has no base model.</summary>
    public Tensor? Base { get; init; }

    /// <summary>The input models' tensors (experts; the base is not among them), all of the same shape.</summary>
    public required IReadOnlyList<Tensor> Models { get; init; }

    /// <summary>The names of the input models, in the order of <see cref="Models"/>.</summary>
    public required IReadOnlyList<string> ModelNames { get; init; }

    /// <summary>One weight per model for this tensor: the configured weight times any decorator coefficient.</summary>
    public required IReadOnlyList<double> Weights { get; init; }

    /// <summary>The strategy's parameters for this tensor (defaults applied, layer schedules evaluated).</summary>
    public required ResolvedParameters Parameters { get; init; }

    /// <summary>Where the result goes: same shape as the inputs, preallocated; write it in place.</summary>
    public required Tensor Output { get; init; }

    /// <summary>Temporary tensors of the same shape, pooled by the host; returned when the merge of this tensor ends.</summary>
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
    /// Row-major index, within the whole tensor, of the first element of <see cref="Output"/> (and of the inputs) when the
    /// host passes a block; 0 for whole tensors. Set by hosts of contract 1.1 and later.
    /// </summary>
    public long ElementStart { get; init; }
}

/// <summary>Pooled temporary tensors with the shape of the tensor being merged.</summary>
public interface ITensorScratch
{
    /// <summary>A tensor of the request's shape and the given dtype, contents undefined.</summary>
    Tensor Rent(ScalarType dtype = ScalarType.Float32);

    /// <summary>A tensor of the given shape and dtype, contents undefined.</summary>
    Tensor Rent(long[] shape, ScalarType dtype = ScalarType.Float32);
}
