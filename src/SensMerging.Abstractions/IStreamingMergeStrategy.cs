namespace SensMerging.Abstractions;

/// <summary>
/// Optional extension (contract 1.1) of a strategy that is not elementwise but can gather the whole-tensor statistics it
/// needs (for example a magnitude rank) from blocks, so a host never holds a whole tensor in memory. Hosts that know
/// this interface merge such a tensor through a session:
/// <list type="number">
/// <item><see cref="BeginTensor"/> once per tensor;</item>
/// <item>for pass = 0, 1, ... while <see cref="ITensorMergeSession.BeginPass"/> returns true: <see cref="ITensorMergeSession.Observe"/>
/// once for every block of the tensor, in ascending <see cref="MergeTensorRequest.ElementStart"/> order;</item>
/// <item><see cref="ITensorMergeSession.Merge"/> once for every block, in ascending order, each writing its block's output;</item>
/// <item>Dispose.</item>
/// </list>
/// All calls of one session come from one thread, one at a time; sessions of different tensors may run concurrently.
/// Blocks are contiguous ranges of the row-major elements (row blocks or flat ranges), float32 on the compute device,
/// with the same <see cref="MergeTensorRequest.Seed"/> for every block (the tensor's seed: block index 0), and the
/// same block boundaries in every pass; scratch rented in one call is valid until that call returns. Each block request's
/// <see cref="MergeTensorRequest.ElementStart"/> is the row-major index of its first element in the whole tensor, and its
/// <see cref="MergeTensorRequest.TensorSeed"/> equals <see cref="MergeTensorInfo.Seed"/>, so a random stream keyed by
/// TensorSeed and ElementStart + index is independent of the block size. The merged result
/// must not depend on the block size. Hosts of contract 1.0,
/// and hosts that choose not to stream, call <see cref="IMergeStrategy.Merge"/> with the whole tensor instead.
/// </summary>
public interface IStreamingMergeStrategy : IMergeStrategy
{
    /// <summary>Starts the merge of one tensor of <paramref name="tensor"/>'s shape.</summary>
    /// <param name="tensor">The tensor's name, shape, models, weights, parameters and seed.</param>
    /// <returns>A session the host drives (BeginPass, Observe, Merge) and then disposes.</returns>
    ITensorMergeSession BeginTensor(MergeTensorInfo tensor);
}

/// <summary>The merge of one tensor in blocks (see <see cref="IStreamingMergeStrategy"/> for the call order).</summary>
public interface ITensorMergeSession : IDisposable
{
    /// <summary>
    /// Called before each statistics pass with pass = 0, 1, ... (and so after the previous pass saw every block): true when
    /// another pass over all blocks is needed, false when the statistics are complete and the merge pass may start.
    /// </summary>
    /// <param name="pass">The pass number, from 0.</param>
    /// <returns>True to observe every block once more; false to go on to <see cref="Merge"/>.</returns>
    bool BeginPass(int pass);

    /// <summary>
    /// Adds one block to the current pass's statistics. The request's inputs are the block's; its
    /// <see cref="MergeTensorRequest.Output"/> is a buffer of the block's shape whose contents are ignored afterwards.
    /// </summary>
    /// <param name="block">One block's request; valid only during the call.</param>
    void Observe(MergeTensorRequest block);

    /// <summary>Merges one block into its <see cref="MergeTensorRequest.Output"/>, using the statistics gathered.</summary>
    /// <param name="block">One block's request; valid only during the call.</param>
    void Merge(MergeTensorRequest block);
}

/// <summary>What a streaming strategy knows about a tensor before seeing its blocks.</summary>
public sealed record MergeTensorInfo
{
    /// <summary>The tensor's name in the Hugging Face layout.</summary>
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

    /// <summary>The whole tensor's shape.</summary>
    public required IReadOnlyList<long> Shape { get; init; }

    /// <summary>True when the blocks carry a base tensor.</summary>
    public required bool HasBase { get; init; }

    /// <summary>The input models' names (experts, not the base).</summary>
    public required IReadOnlyList<string> ModelNames { get; init; }

    /// <summary>One weight per model for this tensor (as in <see cref="MergeTensorRequest.Weights"/>).</summary>
    public required IReadOnlyList<double> Weights { get; init; }

    /// <summary>The strategy's parameters for this tensor.</summary>
    public required ResolvedParameters Parameters { get; init; }

    /// <summary>The tensor's seed (the same in every block request: their <see cref="MergeTensorRequest.Seed"/> and <see cref="MergeTensorRequest.TensorSeed"/>).</summary>
    public long Seed { get; init; }

    /// <summary>The transformer block the tensor belongs to, or -1.</summary>
    public int LayerIndex { get; init; } = -1;

    /// <summary>
    /// The compute dtype of the tensor's blocks (contract 1.6; each block's <see cref="MergeTensorRequest.ComputeDType"/>):
    /// bfloat16 only for strategies that declare <see cref="StrategyTraits.StreamsBFloat16Rounding"/>; hosts before 1.6
    /// leave it float32.
    /// </summary>
    public TorchSharp.torch.ScalarType ComputeDType { get; init; } = TorchSharp.torch.ScalarType.Float32;

    /// <summary>Number of transformer blocks in the model (0 when unknown).</summary>
    public int LayerCount { get; init; }

    /// <summary>Number of elements of the whole tensor.</summary>
    public long ElementCount
    {
        get
        {
            long n = 1;
            foreach (var d in Shape)
            {
                n *= d;
            }
            return n;
        }
    }
}
