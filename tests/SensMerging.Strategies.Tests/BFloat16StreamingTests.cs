using System.Runtime.InteropServices;
using SensMerging.Abstractions;
using SensMerging.Strategies.Common;
using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Strategies.Tests;

/// <summary>
/// The task-arithmetic family streamed in mergekit's bfloat16 rounding (<see cref="StrategyTraits.StreamsBFloat16Rounding"/>):
/// the session's blocks give exactly the bits of the whole-tensor libtorch operations (mergekit's own torch calls, the
/// independent reference <see cref="BFloat16FusedTests"/> checks the fused passes against), for blocks that cut rows,
/// blocks of whole rows, odd tails and blocks not a multiple of the 8-lane vectors, with the blocks' tensors as stored
/// (bfloat16) or widened to float32 as a host hands them when the inputs are not stored in bfloat16.
/// </summary>
public sealed class BFloat16StreamingTests
{
    private static readonly long[] Shape = [37, 113];

    public static TheoryData<string, bool, long, bool> Cases()
    {
        var data = new TheoryData<string, bool, long, bool>();
        foreach (var method in new[] { "task_arithmetic", "ties", "breadcrumbs", "breadcrumbs_ties", "dare_ties", "dare_linear" })
        {
            // 1000: boundaries inside rows; 565: five whole rows; 515: 8 * 64 + 3; 4096: one block and a tail of 85; 4181: whole.
            foreach (var block in new long[] { 1000, 565, 515, 4096, 4181 })
            {
                data.Add(method, false, block, false);
            }
            data.Add(method, false, 1000, true);
        }
        // The L1 rescale (DARE's default): its norms are summed block by block in position-keyed lanes.
        foreach (var method in new[] { "ties", "breadcrumbs_ties", "dare_ties", "dare_linear" })
        {
            data.Add(method, true, 1000, false);
            data.Add(method, true, 565, false);
            data.Add(method, true, 515, true);
            data.Add(method, true, 4181, false);
        }
        return data;
    }

    /// <summary>Blocks whose starts are not multiples of 16 (the norms' lanes) through the eight-lane passes as well.</summary>
    [Theory]
    [InlineData("ties", false, 1000L, false)]
    [InlineData("dare_ties", true, 1000L, false)]
    [InlineData("breadcrumbs_ties", true, 515L, true)]
    public void Eight_lane_blocks_give_the_whole_tensor_bits(string method, bool rescale, long blockElements, bool float32Blocks) =>
        BFloat16FusedTests.AtEightLanes(() => Streamed_blocks_give_the_whole_tensor_bits(method, rescale, blockElements, float32Blocks));

    [Theory]
    [MemberData(nameof(Cases))]
    public void Streamed_blocks_give_the_whole_tensor_bits(string method, bool rescale, long blockElements, bool float32Blocks)
    {
        var variant = TaskArithmeticVariant.All.Single(v => v.Name == method);
        var strategy = (IStreamingMergeStrategy)GeneralizedTaskArithmeticStrategy.Create(variant);
        Assert.True(strategy.Traits.StreamsBFloat16Rounding);
        var numel = Shape[0] * Shape[1];
        var rng = new Random((int)blockElements + method.Length + (rescale ? 7 : 0));
        double[] weights = [0.7, -0.45, 1.1, 0.45];
        var global = new Dictionary<string, object> { ["lambda"] = 0.7, ["normalize"] = true };
        if (variant.Sparsification != SparsificationMethod.None)
        {
            global["rescale"] = rescale;
        }
        var (parameters, settings) = BFloat16FusedTests.Setup(variant, weights, global);
        const long Seed = 12345;

        var baseBits = BFloat16FusedTests.Values(rng, (int)numel, null);
        using var baseTensor = BFloat16FusedTests.Tensor(baseBits).view(Shape);
        var models = weights.Select(_ => BFloat16FusedTests.Tensor(BFloat16FusedTests.Values(rng, (int)numel, baseBits)).view(Shape)).ToList();
        try
        {
            var reference = Whole();
            var streamed = Streamed();
            var differing = Enumerable.Range(0, (int)numel).Where(j => streamed[j] != reference[j]).ToList();
            Assert.True(differing.Count == 0,
                $"{differing.Count} of {numel} elements differ; first at {differing.FirstOrDefault()}: streamed 0x{streamed[differing.FirstOrDefault()]:X4}, whole 0x{reference[differing.FirstOrDefault()]:X4}");
            // Not a vacuous comparison: the merge moved most elements off the base.
            Assert.True(Enumerable.Range(0, (int)numel).Count(j => reference[j] != baseBits[j]) > numel / 2);
        }
        finally
        {
            models.ForEach(m => m.Dispose());
        }

        // mergekit's torch operations on the whole tensor (the fused passes off).
        ushort[] Whole()
        {
            using var output = torch.empty(Shape, ScalarType.BFloat16);
            using var scratch = new TestScratch(Shape);
            var request = Request(baseTensor, models, output, scratch, 0);
            HalfPrecisionTaskArithmetic.Merge(request, variant, settings, baseTensor, Seed, allowFused: false);
            return MemoryMarshal.Cast<byte, ushort>(output.bytes).ToArray();
        }

        ushort[] Streamed()
        {
            var info = WholeTensor.Info(Request(baseTensor, models, baseTensor, null!, 0));
            using var session = strategy.BeginTensor(info);
            Assert.IsType<BFloat16TaskArithmetic.Session>(session);
            var blocks = new List<(long Start, long Count)>();
            for (long start = 0; start < numel; start += blockElements)
            {
                blocks.Add((start, Math.Min(blockElements, numel - start)));
            }
            using var output = torch.empty(numel, float32Blocks ? ScalarType.Float32 : ScalarType.BFloat16);
            var passes = 0;
            for (var pass = 0; session.BeginPass(pass); pass++)
            {
                passes++;
                foreach (var (start, count) in blocks)
                {
                    using var scratchOut = torch.empty(count, output.dtype);
                    Run(start, count, scratchOut, session.Observe);
                }
            }
            // A histogram pass for the magnitude bands, a norm pass for the L1 rescale.
            Assert.Equal((variant.Sparsification is SparsificationMethod.None or SparsificationMethod.Random ? 0 : 1) + (rescale ? 1 : 0), passes);
            foreach (var (start, count) in blocks)
            {
                using var slice = output.narrow(0, start, count);
                Run(start, count, slice, session.Merge);
            }
            using var bits = output.to(ScalarType.BFloat16);
            return MemoryMarshal.Cast<byte, ushort>(bits.bytes).ToArray();
        }

        // One block: row-shaped when it holds whole rows, else flat; the inputs as stored or widened to float32.
        void Run(long start, long count, Tensor output, Action<MergeTensorRequest> call)
        {
            var rows = start % Shape[1] == 0 && count % Shape[1] == 0;
            long[] shape = rows ? [count / Shape[1], Shape[1]] : [count];
            using var scope = NewDisposeScope();
            Tensor Slice(Tensor whole)
            {
                var slice = whole.view(-1).narrow(0, start, count).view(shape);
                return float32Blocks ? slice.to(ScalarType.Float32) : slice;
            }
            using var scratch = new TestScratch(shape);
            call(Request(Slice(baseTensor), [.. models.Select(Slice)], output.view(shape), scratch, start));
        }

        MergeTensorRequest Request(Tensor b, IReadOnlyList<Tensor> inputs, Tensor output, ITensorScratch scratch, long start) => new()
        {
            TensorName = "model.layers.0.mlp.up_proj.weight",
            LayerGroup = "model.layers.0",
            Base = b,
            Models = inputs,
            ModelNames = ["a", "b", "c", "d"],
            Weights = weights,
            Parameters = parameters,
            Output = output,
            Scratch = scratch,
            Seed = Seed,
            TensorSeed = Seed,
            ElementStart = start,
            ComputeDType = ScalarType.BFloat16,
        };
    }
}
