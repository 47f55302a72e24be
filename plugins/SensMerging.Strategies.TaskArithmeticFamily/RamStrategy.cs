using System.Runtime.InteropServices;
using SensMerging.Abstractions;
using SensMerging.Strategies.Common;
using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Strategies.TaskArithmeticFamily;

/// <summary>
/// Reinforced Agent Merging (mergekit <c>ram</c> and <c>ramplus_tl</c>, arXiv 2601.13572) over the task vectors
/// t_i = x_i - base. An entry of t_i counts when |t_i| &gt; epsilon; an entry counted by one model only is taken as it is,
/// one counted by several is their mean, one counted by none stays at the base. <c>ramplus_tl</c> (tensor-local) also
/// scales each model's unique entries by lambda_i = 1 + r clamp(rho_i, 0, alpha), with rho_i the ratio of the model's
/// shared to unique counted entries in this tensor. The configured weights are not used (mergekit's are not either).
/// <c>ram</c> is elementwise (row blocks stream); <c>ramplus_tl</c> takes whole tensors (rho_i counts the whole tensor).
/// With a half-precision <see cref="MergeTensorRequest.ComputeDType"/> both run mergekit's torch operations in that dtype
/// (<see cref="StrategyTraits.RoundsIntermediates"/>): the task vectors and the shared entries' means rounded to it, epsilon
/// cast to it for the comparison, the models' sum accumulated in float32 and rounded once. <c>ramplus_tl</c>'s lambda is
/// a float32 tensor in mergekit, so there the unique entries' products, the sum and the base's addition are float32 and
/// its result is float32 (<see cref="StrategyTraits.WritesFloat32"/>: written so unless an output dtype is asked for, as
/// mergekit writes what its method returns).
/// </summary>
public sealed class RamStrategy : IMergeStrategy
{
    private readonly bool _plus;

    private RamStrategy(bool plus)
    {
        _plus = plus;
        Parameters = plus
            ? [R, Alpha, Epsilon]
            : [Epsilon];
        Traits = new StrategyTraits(RequiresBaseModel: true, MinModels: 1, Elementwise: !plus) { RoundsIntermediates = true, WritesFloat32 = plus };
    }

    /// <summary>mergekit's <c>ram</c>.</summary>
    public static RamStrategy Plain() => new(plus: false);

    /// <summary>mergekit's <c>ramplus_tl</c>.</summary>
    public static RamStrategy PlusTensorLocal() => new(plus: true);

    private static readonly ParameterSpec Epsilon = ParameterSpec.Float(
        "epsilon", 1e-5, ParameterScope.Global, "A task-vector entry counts as a contribution when its magnitude is above this.", min: 0);

    private static readonly ParameterSpec R = ParameterSpec.Float(
        "r", 0.1, ParameterScope.Global, "Strength of the boost of each model's unique entries (lambda = 1 + r clamp(rho, 0, alpha)).");

    private static readonly ParameterSpec Alpha = ParameterSpec.Float(
        "alpha", 0.2, ParameterScope.Global, "Upper clamp of rho, the ratio of a model's shared to unique entries in the tensor.");

    public string Name => _plus ? "ramplus_tl" : "ram";

    public string Description => _plus
        ? "RAM+ (tensor-local): RAM, with each model's unique entries boosted by how much of its task vector is shared."
        : "RAM: task-vector entries given by one model are kept, entries given by several are averaged.";

    public IReadOnlyList<ParameterSpec> Parameters { get; }

    public StrategyTraits Traits { get; }

    public void Merge(MergeTensorRequest request)
    {
        var baseTensor = RequestChecks.Check(request, Name, Traits)!;
        var epsilon = request.Parameters.Float("epsilon");
        if (request.ComputesInHalfPrecision)
        {
            MergeInComputeDType(request, baseTensor, epsilon);
            return;
        }
        if (Fused(request, baseTensor, epsilon))
        {
            return;
        }
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var vectors = stack([.. request.Models.Select(m => (m - baseTensor).reshape(-1))], 0);
        var counted = vectors.abs().gt(epsilon);
        var counts = counted.sum(0L, keepdim: true);
        var overlap = counts.gt(1);
        var unique = counts.eq(1);
        var zeroed = vectors * counted;
        var uniquePart = zeroed * unique;
        if (_plus)
        {
            uniquePart = uniquePart * Lambda(request, counted, overlap, unique, epsilon).unsqueeze(-1);
        }
        var merged = (uniquePart + (zeroed * overlap / counts.clamp_min(1))).sum(0L);
        request.Output.copy_(baseTensor + merged.view(baseTensor.shape));
    }

    /// <summary>
    /// RAM+'s lambda_i = 1 + r clamp(rho_i, 0, alpha), rho_i = shared_i / max(unique_i, epsilon), as mergekit computes it:
    /// float32 whatever the compute dtype (its counts are int64, and clamping them by a float promotes to float32).
    /// </summary>
    private static Tensor Lambda(MergeTensorRequest request, Tensor counted, Tensor overlap, Tensor unique, double epsilon)
    {
        var shared = counted.logical_and(overlap).sum(1L).to_type(ScalarType.Float32);
        var alone = counted.logical_and(unique).sum(1L).to_type(ScalarType.Float32);
        var rho = shared / alone.clamp_min(epsilon);
        return (rho.clamp(0, request.Parameters.Float("alpha")) * request.Parameters.Float("r")) + 1;
    }

    /// <summary>
    /// mergekit's operations on tensors of the compute dtype: <c>t = x - base</c> stacked (each rounded),
    /// <c>|t| &gt; epsilon</c> (torch casts the scalar to the dtype for a comparison), the int64 counts,
    /// <c>t * counted</c>, the unique part <c>t * unique</c> and the shared part <c>t * overlap / counts.clamp(min=1)</c>
    /// (the division rounded), their sum (rounded), the sum over the models (float32 accumulation, rounded once), plus the
    /// base (rounded). For <c>ramplus_tl</c> the unique part is multiplied by the float32 lambda, which promotes the rest to
    /// float32 (mergekit's result is float32). The integer clamp bound keeps the counts int64 (a float one would promote the
    /// division to float32).
    /// </summary>
    private void MergeInComputeDType(MergeTensorRequest request, Tensor baseTensor, double epsilon)
    {
        var dtype = request.ComputeDType;
        var k = request.Models.Count;
        // Rented outside the dispose scope below (disposing it must not dispose them); copies exact: the host already
        // rounded the inputs to the dtype.
        var baseValues = request.Scratch.Rent(dtype).copy_(baseTensor);
        var vectors = request.Scratch.Rent([k, baseTensor.numel()], dtype);
        using var flatBase = baseValues.view(-1);
        for (var i = 0; i < k; i++)
        {
            using var row = vectors[i];
            using var model = request.Models[i].reshape(-1);
            row.copy_(model).sub_(flatBase);
        }
        using var scope = NewDisposeScope();
        var counted = vectors.abs().gt(epsilon);
        var counts = counted.sum(0L, keepdim: true);
        var overlap = counts.gt(1);
        var unique = counts.eq(1);
        var zeroed = vectors.mul(counted);
        var uniquePart = zeroed.mul(unique);
        if (_plus)
        {
            uniquePart = uniquePart.mul(Lambda(request, counted, overlap, unique, epsilon).unsqueeze(-1));
        }
        var merged = uniquePart.add(zeroed.mul(overlap).div(counts.clamp_min(1L))).sum(0L);
        request.Output.copy_(baseValues.add(merged.view(baseValues.shape)));
    }

    /// <summary>
    /// The same rule in managed loops over float32 CPU tensors (no libtorch temporaries: on large tensors their fresh pages
    /// cost more than the arithmetic), with the libtorch chain's float32 operations in its order: t = x - b, counted when
    /// |t| &gt; epsilon; a count per entry (in a scratch buffer); for RAM+ each model's shared and unique counts and its
    /// lambda; then, model by model in order, a unique entry's t (times lambda) or a shared one's t / count added up, and
    /// the sum added to the base. False (the libtorch path) for other tensors.
    /// </summary>
    private bool Fused(MergeTensorRequest request, Tensor baseTensor, double epsilon)
    {
        Tensor[] all = [baseTensor, request.Output, .. request.Models];
        if (all.Any(t => t.dtype != ScalarType.Float32 || t.device_type != DeviceType.CPU || !t.is_contiguous()))
        {
            return false;
        }
        var eps = (float)epsilon;
        var k = request.Models.Count;
        var b = MemoryMarshal.Cast<byte, float>(baseTensor.bytes);
        var countTensor = request.Scratch.Rent();
        var count = MemoryMarshal.Cast<byte, float>(countTensor.bytes);
        count.Clear();
        for (var i = 0; i < k; i++)
        {
            var x = MemoryMarshal.Cast<byte, float>(request.Models[i].bytes);
            for (var e = 0; e < b.Length; e++)
            {
                count[e] += MathF.Abs(x[e] - b[e]) > eps ? 1f : 0f;
            }
        }
        var lambda = new float[k];
        Array.Fill(lambda, 1f);
        if (_plus)
        {
            var (r, alpha) = ((float)request.Parameters.Float("r"), (float)request.Parameters.Float("alpha"));
            for (var i = 0; i < k; i++)
            {
                var x = MemoryMarshal.Cast<byte, float>(request.Models[i].bytes);
                long shared = 0, alone = 0;
                for (var e = 0; e < b.Length; e++)
                {
                    if (MathF.Abs(x[e] - b[e]) > eps)
                    {
                        if (count[e] == 1f)
                        {
                            alone++;
                        }
                        else
                        {
                            shared++;
                        }
                    }
                }
                var rho = shared / Math.Max((float)alone, eps);
                lambda[i] = (Math.Clamp(rho, 0f, alpha) * r) + 1f;
            }
        }
        var output = MemoryMarshal.Cast<byte, float>(request.Output.bytes);
        output.Clear();
        for (var i = 0; i < k; i++)
        {
            var x = MemoryMarshal.Cast<byte, float>(request.Models[i].bytes);
            var boost = lambda[i];
            for (var e = 0; e < b.Length; e++)
            {
                var t = x[e] - b[e];
                if (MathF.Abs(t) > eps)
                {
                    output[e] += count[e] == 1f ? t * boost : t / count[e];
                }
            }
        }
        for (var e = 0; e < b.Length; e++)
        {
            output[e] = b[e] + output[e];
        }
        return true;
    }
}
