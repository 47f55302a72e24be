using SensMerging.Abstractions;
using SensMerging.Core.Models;
using SensMerging.Core.SafeTensors;

namespace SensMerging.Core.Engine;

/// <summary>
/// One output tensor: its inputs (slot 0 is the base when there is one), parameters and weights. <paramref name="InputDType"/>
/// is the reference model's stored dtype (each input may be stored in another floating-point dtype: see
/// <see cref="ModelTensor.DType"/>), <paramref name="InputNames"/> the models they are read from (by slot), <paramref name="CastDType"/> the dtype every input is cast to before merging
/// (<see cref="MergePlan.CastDType"/>), <paramref name="OutputDType"/> the dtype written.
/// </summary>
internal sealed record MergeJob(
    int Index,
    string Name,
    long[] Shape,
    SafeTensorsDType InputDType,
    SafeTensorsDType CastDType,
    SafeTensorsDType OutputDType,
    IReadOnlyList<ModelTensor> Inputs,
    bool HasBase,
    bool IsMerged,
    ResolvedParameters Parameters,
    IReadOnlyList<double> Weights,
    string LayerGroup,
    int LayerIndex,
    IReadOnlyList<string> InputNames)
{
    /// <summary>
    /// The names of the models merged (the inputs without the base), as strategies see them. Derived once per job, as
    /// the values below: every block's request reads them.
    /// </summary>
    public IReadOnlyList<string> ModelNames { get; } = HasBase ? [.. InputNames.Skip(1)] : InputNames;

    public long OutputBytes => checked(TensorShape.ElementCount(Shape) * OutputDType.Size);

    /// <summary>Bytes the inputs of one element take in their files, summed over the inputs.</summary>
    public long InputBytesPerElement { get; } = Inputs.Sum(i => (long)i.DType.Size);

    /// <summary>
    /// The dtype whose arithmetic the strategy reproduces (<see cref="MergeTensorRequest.ComputeDType"/>): the cast dtype
    /// when it is bfloat16 or float16 and the plan does not compute in float32, else float32.
    /// </summary>
    public SafeTensorsDType ComputeDType { get; init; } = SafeTensorsDType.F32;

    /// <summary>The compute dtype of a merged tensor cast to <paramref name="cast"/> under <paramref name="plan"/>.</summary>
    public static SafeTensorsDType ComputeFor(MergePlan plan, SafeTensorsDType cast) =>
        !plan.ComputeInFloat32 && (cast == SafeTensorsDType.BF16 || cast == SafeTensorsDType.F16) ? cast : SafeTensorsDType.F32;

    /// <summary>
    /// The dtype a merged tensor cast to <paramref name="cast"/> is written in: the plan's output dtype, else float32 for a
    /// strategy whose mergekit method returns float32 (<see cref="StrategyTraits.WritesFloat32"/>), else the cast dtype.
    /// </summary>
    public static SafeTensorsDType OutputFor(MergePlan plan, SafeTensorsDType cast) =>
        plan.OutputDType ?? (plan.Strategy.Traits.WritesFloat32 ? SafeTensorsDType.F32 : cast);

    /// <summary>True when the strategy must round its intermediates to a half-precision <see cref="ComputeDType"/>.</summary>
    public bool RoundsInHalfPrecision(StrategyTraits traits) => IsMerged && traits.RoundsIntermediates && ComputeDType != SafeTensorsDType.F32;

    /// <summary>
    /// Each model's own layer group (the base excluded), when a frankenmerge reads this output tensor from other layers
    /// than its own (<see cref="MergeTensorRequest.ModelLayerGroups"/>); null otherwise.
    /// </summary>
    public IReadOnlyList<string>? ModelLayerGroups { get; init; }

    /// <summary>Whether every input is stored in bfloat16.</summary>
    public bool StoredAsBFloat16 { get; } = Inputs.All(i => i.DType == SafeTensorsDType.BF16);
}

/// <summary>
/// A piece of a job: the whole tensor, or a block of rows of it. A streamed item is a whole tensor of a streaming
/// strategy (<see cref="IStreamingMergeStrategy"/>), merged by one worker block by block (<see cref="Blocks"/>).
/// </summary>
internal sealed record MergeWorkItem(MergeJob Job, int Block, int BlockCount, long ElementStart, long ElementCount, long[] Shape)
{
    /// <summary>The blocks a streamed item is read and merged in (null for other items).</summary>
    public IReadOnlyList<MergeWorkItem>? Blocks { get; init; }

    /// <summary>The work items of a job: one streamed item when <paramref name="streaming"/> (the engine streams the strategy), else whole tensors or row blocks.</summary>
    public static IEnumerable<MergeWorkItem> Plan(MergeJob job, StrategyTraits traits, bool streaming, long blockElements)
    {
        if (streaming && job.IsMerged)
        {
            return [new MergeWorkItem(job, 0, 1, 0, TensorShape.ElementCount(job.Shape), job.Shape) { Blocks = [.. Split(job, true, blockElements)] }];
        }
        return Split(job, traits.Elementwise, blockElements);
    }

    public static IEnumerable<MergeWorkItem> Split(MergeJob job, bool elementwise, long blockElements)
    {
        var total = TensorShape.ElementCount(job.Shape);
        if (!job.IsMerged || !elementwise || total <= blockElements || job.Shape.Length == 0)
        {
            yield return new MergeWorkItem(job, 0, 1, 0, total, job.Shape);
            yield break;
        }
        var rows = job.Shape[0];
        var rowElements = total / rows;
        if (rowElements <= blockElements)
        {
            var rowsPerBlock = blockElements / rowElements;
            var count = (int)((rows + rowsPerBlock - 1) / rowsPerBlock);
            for (var b = 0; b < count; b++)
            {
                var start = b * rowsPerBlock;
                var n = Math.Min(rowsPerBlock, rows - start);
                long[] shape = [n, .. job.Shape[1..]];
                yield return new MergeWorkItem(job, b, count, start * rowElements, n * rowElements, shape);
            }
            yield break;
        }
        // A single row is larger than a block: split the flattened elements (valid because the strategy is elementwise).
        var blocks = (int)((total + blockElements - 1) / blockElements);
        for (var b = 0; b < blocks; b++)
        {
            var start = b * blockElements;
            var n = Math.Min(blockElements, total - start);
            yield return new MergeWorkItem(job, b, blocks, start, n, [n]);
        }
    }
}
