using SensMerging.Abstractions;
using SensMerging.Strategies.Common;
using SensMerging.Strategies.ModelStock;
using SensMerging.Strategies.Slerp;
using TorchSharp;
using static SensMerging.Strategies.Tests.MergeHarness;

namespace SensMerging.Strategies.Tests;

/// <summary>slerp and model_stock in blocks: the statistics pass (<see cref="BlockGram"/>) and the merge give the whole-tensor bits.</summary>
public sealed class GeometricStreamingTests
{
    private const int N = 1001;

    [Fact]
    public void Slerp_in_blocks_of_any_size_gives_the_whole_tensor_result_bit_for_bit()
    {
        var rng = new Random(21);
        var b = Random(rng, N);
        var x = Random(rng, N, 1.3, 0.05);
        var global = new Dictionary<string, object> { ["t"] = 0.3 };
        double[] weights = [1.5];
        var whole = Run(new SlerpStrategy(), b, [x], weights, global);
        foreach (var block in new[] { 3, 8, 64, 333, N })
        {
            var streamed = Stream(new SlerpStrategy(), b, [x], weights, global, null, seed: 0, block);
            Assert.Equal(Bits(whole), Bits(streamed));
        }
        // And it is slerp: the reference computes the angle independently in double over the whole vector.
        Close(Reference.Slerp(b, x, 0.45), whole, 1e-5);
    }

    [Fact]
    public void Model_stock_in_blocks_of_any_size_gives_the_whole_tensor_result_bit_for_bit()
    {
        var rng = new Random(22);
        var b = Random(rng, N);
        float[][] xs = [Random(rng, N, 0.2), Random(rng, N, 0.3, 0.1), Random(rng, N, 0.1, -0.05)];
        for (var i = 0; i < N; i++)
        {
            xs[0][i] += b[i];
            xs[1][i] += b[i];
            xs[2][i] += b[i];
        }
        double[] weights = [0.5, 1.25, 2.0];
        var whole = Run(new ModelStockStrategy(), b, xs, weights);
        foreach (var block in new[] { 5, 8, 100, 999, N })
        {
            var streamed = Stream(new ModelStockStrategy(), b, xs, weights, null, null, seed: 0, block);
            Assert.Equal(Bits(whole), Bits(streamed));
        }
        Close(Reference.ModelStock(b, xs, weights), whole, 1e-5);
    }

    [Fact]
    public void Gram_sums_match_double_sums_and_do_not_depend_on_where_blocks_start()
    {
        var rng = new Random(23);
        var origin = Random(rng, N);
        float[][] xs = [Random(rng, N), Random(rng, N, 2), Random(rng, N, 0.5, 0.3)];
        var whole = Gram(xs, origin, N);
        for (var i = 0; i < 3; i++)
        {
            for (var j = 0; j < 3; j++)
            {
                double expected = 0;
                for (var e = 0; e < N; e++)
                {
                    expected += (double)(xs[i][e] - origin[e]) * (xs[j][e] - origin[e]);
                }
                Assert.Equal(expected, whole.Sum(i, j), 1e-9 * Math.Max(1, Math.Abs(expected)));
                Assert.Equal(whole.Sum(i, j), whole.Sum(j, i));
            }
        }
        foreach (var block in new[] { 1, 5, 13, 500 })
        {
            var cut = Gram(xs, origin, block);
            for (var i = 0; i < 3; i++)
            {
                for (var j = i; j < 3; j++)
                {
                    Assert.Equal(BitConverter.DoubleToInt64Bits(whole.Sum(i, j)), BitConverter.DoubleToInt64Bits(cut.Sum(i, j)));
                }
            }
        }
    }

    [Fact]
    public void Non_contiguous_inputs_give_the_same_bits_as_contiguous_ones()
    {
        var rng = new Random(24);
        const int rows = 13;
        const int cols = 11;
        var b = Random(rng, rows * cols);
        float[][] xs = [Random(rng, rows * cols, 0.4), Random(rng, rows * cols, 0.7, 0.2)];
        var direct = Run(new ModelStockStrategy(), b, xs, shape: [rows, cols]);
        var general = Run(new ModelStockStrategy(), b, xs, shape: [rows, cols], torchPath: true);
        Assert.Equal(Bits(direct), Bits(general));
    }

    [Fact]
    public void Merge_before_the_statistics_pass_is_a_clear_error()
    {
        var strategy = new ModelStockStrategy();
        var info = Info(strategy, 4, [1.0, 1.0], null, null, 0);
        using var session = strategy.BeginTensor(info);
        using var t = torch.zeros(4);
        using var o = torch.zeros(4);
        using var scratch = new TestScratch([4]);
        Assert.True(session.BeginPass(0));
        var ex = Assert.Throws<InvalidOperationException>(() => session.Merge(Block(t, [t, t], o, scratch, [1.0, 1.0], info, 0)));
        Assert.Contains("statistics", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Bad_tensors_are_refused_when_the_session_starts()
    {
        var slerp = new SlerpStrategy();
        var twoModels = Info(slerp, 4, [1.0, 1.0], new() { ["t"] = 0.5 }, null, 0);
        Assert.Contains("at most 1", Assert.Throws<ArgumentException>(() => slerp.BeginTensor(twoModels)).Message, StringComparison.Ordinal);
        var stock = new ModelStockStrategy();
        var zeroSum = Info(stock, 4, [1.0, -1.0], null, null, 0);
        Assert.Contains("sum to zero", Assert.Throws<ArgumentException>(() => stock.BeginTensor(zeroSum)).Message, StringComparison.Ordinal);
    }

    private static BlockGram Gram(float[][] xs, float[] origin, int block)
    {
        var gram = new BlockGram(xs.Length);
        ForEachBlock(N, block, (start, count) =>
        {
            using var scope = torch.NewDisposeScope();
            gram.Add([.. xs.Select(x => torch.tensor(x[start..(start + count)]))], torch.tensor(origin[start..(start + count)]), start);
        });
        return gram;
    }

    private static int[] Bits(float[] values) => [.. values.Select(BitConverter.SingleToInt32Bits)];
}
