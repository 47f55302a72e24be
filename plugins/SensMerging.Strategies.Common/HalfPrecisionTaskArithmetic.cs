using SensMerging.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Strategies.Common;

/// <summary>
/// Generalized task arithmetic as mergekit computes it when its <c>dtype</c> is bfloat16 or float16
/// (<see cref="MergeTensorRequest.ComputeDType"/>): the same torch operations on tensors of that dtype, in mergekit's
/// order, so libtorch rounds every intermediate where mergekit's torch does and the result has mergekit's bits.
/// <list type="number">
/// <item>task vectors <c>d_i = x_i - base</c>, each sparsified by <see cref="DeltaSparsifier"/> (magnitude bands on the
/// rounded deltas; the L1 rescale's norms and factor as 0-dim tensors of the dtype);</item>
/// <item>weights as a tensor of the dtype (each rounded to it), <c>w_i * d_i</c> stacked;</item>
/// <item>with sign election: the majority sign of their sum (<c>&gt;= 0</c> elects +1), the kept sum and the kept weights'
/// sum (0 replaced by 1); without: the sum and the weights' sum (below 1e-8 in magnitude replaced by 1);</item>
/// <item>divided by that sum when normalizing, times lambda when it is not 1, plus the base.</item>
/// </list>
/// Sums over the models accumulate in float32 and round once (torch's reduction); every other operation rounds its
/// result. Magnitude ties at the threshold are all kept (mergekit's argsort keeps an arbitrary subset of them, which is
/// more frequent in half precision). Memory: one stacked tensor of the models' weighted deltas in the dtype.
/// bfloat16 requests (all but DELLA) take <see cref="BFloat16TaskArithmetic"/>'s fused passes instead (same bits, no
/// stacked tensor); float16 and DELLA stay here.
/// </summary>
internal static class HalfPrecisionTaskArithmetic
{
    /// <summary>True for bfloat16 and float16.</summary>
    public static bool IsHalf(ScalarType dtype) => dtype is ScalarType.BFloat16 or ScalarType.Float16;

    /// <summary>
    /// Merges the request's tensor into its output: through <see cref="BFloat16TaskArithmetic"/>'s fused passes where
    /// they apply (same bits; <paramref name="allowFused"/> false forces the libtorch operations, for the tests that
    /// compare the two), else with libtorch operations.
    /// </summary>
    public static void Merge(MergeTensorRequest request, TaskArithmeticVariant variant, TaskArithmeticSettings settings, Tensor baseInput, long randomSeed, bool allowFused = true)
    {
        if (allowFused && BFloat16TaskArithmetic.Applies(request, variant, settings))
        {
            BFloat16TaskArithmetic.Merge(request, variant, settings, randomSeed);
            return;
        }
        var dtype = request.ComputeDType;
        var count = request.Models.Count;
        using var noGrad = torch.no_grad();
        // Pooled buffers are rented outside the dispose scope below (disposing it must not dispose them).
        var baseTensor = request.Scratch.Rent(dtype);
        var mask = request.Scratch.Rent(dtype);
        var deltas = request.Scratch.Rent([count, .. request.Output.shape], dtype);
        baseTensor.copy_(baseInput); // exact: the host already rounded the inputs to the dtype
        var sparsifier = new DeltaSparsifier(variant, settings, randomSeed, request.ElementStart, request.Scratch, count);

        using var requested = torch.tensor(settings.Weights, ScalarType.Float64);
        using var weights = requested.to(dtype);
        // Outside the dispose scope too: the sparsifier rents DARE's counter buffers on its first call.
        for (var i = 0; i < count; i++)
        {
            using var delta = deltas[i];
            using var weight = weights[i];
            sparsifier.Delta(i, request.Models[i], baseTensor, delta, mask);
            delta.mul_(weight);
        }

        // The rest is elementwise over the stacked models: done in column chunks, so its temporaries are a few MB that
        // the allocator reuses instead of whole-tensor buffers touched for the first time (the results are identical:
        // every operation is per element, every sum is over the models of one element).
        var numel = request.Output.numel();
        using var output = request.Output.is_contiguous() ? request.Output.view(-1) : null;
        using var flatDeltas = deltas.view(count, -1);
        using var flatBase = baseTensor.view(-1);
        var chunk = numel <= CombineChunk || output is null ? Math.Max(numel, 1) : CombineChunk;
        for (long start = 0; start < numel; start += chunk)
        {
            using var scope = NewDisposeScope();
            var length = Math.Min(chunk, numel - start);
            var merged = Combine(flatDeltas.narrow(1, start, length), flatBase.narrow(0, start, length), weights, variant, settings);
            if (output is null)
            {
                request.Output.copy_(merged.view(request.Output.shape));
            }
            else
            {
                output.narrow(0, start, length).copy_(merged);
            }
        }
    }

    /// <summary>Elements per chunk of the elementwise combination (temporaries of a few MB each).</summary>
    private const long CombineChunk = 1L << 20;

    /// <summary>
    /// mergekit's combination of the weighted task vectors <paramref name="deltas"/> ([models, n], the dtype) over
    /// <paramref name="baseTensor"/> ([n]): sign election or plain sum, the divisor, lambda, the base.
    /// </summary>
    private static Tensor Combine(Tensor deltas, Tensor baseTensor, Tensor weights, TaskArithmeticVariant variant, TaskArithmeticSettings settings)
    {
        var count = deltas.shape[0];
        Tensor mixed;
        Tensor divisor;
        if (variant.Consensus == ConsensusMethod.None)
        {
            mixed = deltas.sum(0L);
            divisor = weights.sum();
            divisor.masked_fill_(divisor.abs().lt(TaskArithmeticSettings.ZeroDivisor), 1);
        }
        else
        {
            var majority = deltas.sum(0L).ge(0).to(deltas.dtype).mul_(2).sub_(1);
            var agree = deltas.sign().eq(majority);
            mixed = deltas.mul(agree).sum(0L);
            divisor = weights.view(count, 1).mul(agree).sum(0L);
            divisor.masked_fill_(divisor.eq(0), 1);
        }
        if (settings.Normalize)
        {
            mixed.div_(divisor);
        }
        if (settings.Lambda != 1.0)
        {
            // Out of place on purpose: libtorch's in-place mul_(Scalar) casts the scalar to the tensor's dtype first (it
            // redispatches with the scalar as the first operand), while Python's `mixed *= lambda` keeps it in float32.
            mixed = mixed.mul(settings.Lambda);
        }
        return baseTensor.add(mixed);
    }
}
