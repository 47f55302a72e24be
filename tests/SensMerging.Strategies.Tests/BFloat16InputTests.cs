using System.Runtime.InteropServices;
using SensMerging.Abstractions;
using TorchSharp;
using static SensMerging.Strategies.Tests.MergeHarness;
using static TorchSharp.torch;

namespace SensMerging.Strategies.Tests;

/// <summary>
/// Strategies that declare <see cref="StrategyTraits.AcceptsBFloat16"/> merge bfloat16 tensors as stored to the bits of
/// the float32 merge of the widened values, rounded once, whole or in blocks of any size.
/// </summary>
public sealed class BFloat16InputTests
{
    private const int N = 1003; // 125 vectors of 8 and a scalar tail of 3

    public static TheoryData<string> Methods => StreamingTests.Methods;

    [Theory]
    [MemberData(nameof(Methods))]
    public void Bf16_tensors_give_the_rounded_float32_merge_of_their_widened_values(string method)
    {
        var strategy = StreamingTests.Create(method);
        Assert.True(strategy.Traits.AcceptsBFloat16);
        var rng = new Random(31);
        using var b = Bf16(Random(rng, N));
        Tensor[] xs = [Bf16(Random(rng, N, 1, 0.05)), Bf16(Random(rng, N, 2)), Bf16(Random(rng, N, 0.5, -0.1))];
        var (weights, global, perModel) = ThreeExperts(strategy);
        try
        {
            // Reference: the float32 path on the widened values (checked against independent math elsewhere), rounded
            // to bfloat16 by libtorch.
            var widened = Run(strategy, Widen(b), [.. xs.Select(Widen)], weights, global, perModel, seed: 7);
            using var rounded = torch.tensor(widened).to(ScalarType.BFloat16);
            var expected = Bits(rounded);

            var info = Info(strategy, N, weights, global, perModel, seed: 7);
            using var output = torch.empty(N, ScalarType.BFloat16);
            using (var scratch = new TestScratch([N]))
            {
                strategy.Merge(Block(b, xs, output, scratch, weights, info, 0));
            }
            Assert.Equal(ScalarType.BFloat16, output.dtype);
            Assert.Equal(expected, Bits(output));

            foreach (var block in new[] { 5, 64, N })
            {
                Assert.Equal(expected, Streamed(strategy, b, xs, weights, info, block));
            }
        }
        finally
        {
            foreach (var x in xs)
            {
                x.Dispose();
            }
        }
    }

    [Fact]
    public void Nan_inf_and_overflow_follow_the_contract_rounding_in_the_vector_body_and_the_tail()
    {
        var strategy = StreamingTests.Create("task_arithmetic");
        var rng = new Random(3);
        var baseValues = Random(rng, N);
        var expert = Random(rng, N, 2);
        expert[3] = float.NaN;
        expert[1001] = float.NaN; // in the scalar tail
        expert[10] = float.PositiveInfinity;
        expert[11] = 3e38f; // finite in bfloat16, the weighted sum overflows to +inf
        baseValues[11] = -3e38f;
        using var b = Bf16(baseValues);
        using var x = Bf16(expert);
        var weights = new[] { 1.0 };
        var widened = Run(strategy, Widen(b), [Widen(x)], weights, seed: 1);
        var expected = widened.Select(BFloat16Bits.FromSingle).ToArray();

        var info = Info(strategy, N, weights, null, null, seed: 1);
        using var output = torch.empty(N, ScalarType.BFloat16);
        using (var scratch = new TestScratch([N]))
        {
            strategy.Merge(Block(b, [x], output, scratch, weights, info, 0));
        }
        var actual = Bits(output);
        Assert.Equal(expected, actual);
        Assert.Equal(BFloat16Bits.NaN, actual[3]);
        Assert.Equal(BFloat16Bits.NaN, actual[1001]);
        Assert.Equal((ushort)0x7F80, actual[10]);
        Assert.Equal((ushort)0x7F80, actual[11]);
    }

    private static ushort[] Streamed(IStreamingMergeStrategy strategy, Tensor b, Tensor[] xs, double[] weights, MergeTensorInfo info, int block)
    {
        using var output = torch.empty(N, ScalarType.BFloat16);
        using var session = strategy.BeginTensor(info);
        void Each(Action<MergeTensorRequest> step, bool intoOutput) => ForEachBlock(N, block, (start, count) =>
        {
            using var scope = torch.NewDisposeScope();
            using var scratch = new TestScratch([count]);
            var target = intoOutput ? output.narrow(0, start, count) : torch.empty(count, ScalarType.BFloat16);
            step(Block(b.narrow(0, start, count), [.. xs.Select(x => x.narrow(0, start, count))], target, scratch, weights, info, start));
        });
        for (var pass = 0; session.BeginPass(pass); pass++)
        {
            Each(session.Observe, intoOutput: false);
        }
        Each(session.Merge, intoOutput: true);
        return Bits(output);
    }

    private static Tensor Bf16(float[] values)
    {
        using var f = torch.tensor(values);
        return f.to(ScalarType.BFloat16);
    }

    private static float[] Widen(Tensor bf16)
    {
        using var f = bf16.to(ScalarType.Float32);
        return f.data<float>().ToArray();
    }

    private static ushort[] Bits(Tensor bf16) => MemoryMarshal.Cast<byte, ushort>(bf16.bytes).ToArray();
}
