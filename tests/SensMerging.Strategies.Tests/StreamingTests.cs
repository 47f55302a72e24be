using SensMerging.Abstractions;
using SensMerging.Strategies.Common;
using TorchSharp;
using static SensMerging.Strategies.Tests.MergeHarness;

namespace SensMerging.Strategies.Tests;

/// <summary>The block protocol (<see cref="IStreamingMergeStrategy"/>) gives exactly the whole-tensor result.</summary>
public sealed class StreamingTests
{
    public static TheoryData<string> Methods => ["task_arithmetic", "ties", "dare_linear", "dare_ties", "breadcrumbs", "breadcrumbs_ties"];

    [Theory]
    [MemberData(nameof(Methods))]
    public void Blocks_of_any_size_give_the_whole_tensor_result_bit_for_bit(string method)
    {
        var strategy = Create(method);
        var rng = new Random(11);
        const int n = 1001;
        var b = Random(rng, n);
        float[][] xs = [Random(rng, n, 1, 0.05), Random(rng, n, 2), Random(rng, n, 0.5, -0.1)];
        var (weights, global, perModel) = ThreeExperts(strategy);
        var whole = Run(strategy, b, xs, weights, global, perModel, seed: 99);

        foreach (var block in new[] { 3, 64, 333, n })
        {
            var streamed = Stream(strategy, b, xs, weights, global, perModel, seed: 99, block);
            Assert.Equal(whole.Select(BitConverter.SingleToInt32Bits), streamed.Select(BitConverter.SingleToInt32Bits));
        }
    }

    [Theory]
    [InlineData(false, 1)]
    [InlineData(true, 3)]
    public void Large_tensors_need_one_statistics_pass_when_the_first_block_predicts_the_bucket(bool firstBlockUnlike, int expectedPasses)
    {
        // From 2^18 elements: the first pass counts the keys below, and the low bits inside, a window of buckets around
        // the one the first block predicts. A first block unlike the rest (100x larger deltas) predicts a wrong window:
        // the two classic passes follow, with the same result.
        var strategy = new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.Ties);
        var rng = new Random(21);
        const int n = 300_000;
        const int block = 50_000;
        var b = Random(rng, n);
        float[][] xs = [Random(rng, n, 0.02), Random(rng, n, 0.03, 0.01), Random(rng, n, 0.01)];
        if (firstBlockUnlike)
        {
            foreach (var x in xs)
            {
                for (var e = 0; e < block; e++)
                {
                    x[e] = b[e] + ((x[e] - b[e]) * 100f);
                }
            }
        }
        var weights = new[] { 0.5, 0.3, 0.2 };
        var global = new Dictionary<string, object> { ["lambda"] = 1.0 };
        var perModel = new Dictionary<string, object>[] { new() { ["density"] = 0.5 }, new() { ["density"] = 0.3 }, new() { ["density"] = 0.7 } };
        var streamed = Stream(strategy, b, xs, weights, global, perModel, seed: 7, block, out var passes);
        Assert.Equal(expectedPasses, passes);

        // The whole-tensor merge (one block) gives the same bits, and both agree with the independent reference.
        var whole = Run(strategy, b, xs, weights, global, perModel, seed: 7);
        Assert.Equal(whole.Select(BitConverter.SingleToInt32Bits), streamed.Select(BitConverter.SingleToInt32Bits));
        var trimmed = xs.Select((x, i) => Reference.TopMagnitude(Reference.Delta(x, b), (double)perModel[i]["density"])).ToArray();
        Close(Reference.Combine(b, trimmed, weights, consensus: true, normalize: true, 1.0), streamed);
    }

    [Theory]
    [InlineData("breadcrumbs")]
    [InlineData("breadcrumbs_ties")]
    [InlineData("ties")]
    public void Large_tensors_with_two_ranks_per_model_stream_to_the_whole_tensor_result(string method)
    {
        // Above the window size, with a lower and an upper rank per model (breadcrumbs) and blocks that cut rows anywhere.
        var strategy = Create(method);
        var rng = new Random(8);
        const int n = 280_001;
        var b = Random(rng, n);
        float[][] xs = [Random(rng, n, 1, 0.05), Random(rng, n, 2)];
        var weights = new[] { 0.7, 0.5 };
        var global = new Dictionary<string, object> { ["lambda"] = 1.0, ["normalize"] = true };
        var perModel = new Dictionary<string, object>[] { new() { ["density"] = 0.6, ["gamma"] = 0.05 }, new() { ["density"] = 0.2, ["gamma"] = 0.3 } };
        var given = method == "ties" ? [.. perModel.Select(m => new Dictionary<string, object> { ["density"] = m["density"] })] : perModel; // gamma is breadcrumbs' alone
        var whole = Run(strategy, b, xs, weights, global, given, seed: 3);
        var streamed = Stream(strategy, b, xs, weights, global, given, seed: 3, 70_001);
        Assert.Equal(whole.Select(BitConverter.SingleToInt32Bits), streamed.Select(BitConverter.SingleToInt32Bits));
        var banded = xs.Select((x, i) => method == "ties"
            ? Reference.TopMagnitude(Reference.Delta(x, b), (double)perModel[i]["density"])
            : Reference.Band(Reference.Delta(x, b), (double)perModel[i]["density"], (double)perModel[i]["gamma"])).ToArray();
        Close(Reference.Combine(b, banded, weights, consensus: method != "breadcrumbs", normalize: true, 1.0), streamed);
    }

    [Fact]
    public void Merge_before_the_statistics_end_is_a_clear_error()
    {
        var strategy = new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.Ties);
        var info = Info(strategy, 4, [1.0], null, [new() { ["density"] = 0.5 }], 0);
        using var session = strategy.BeginTensor(info);
        using var t = torch.zeros(4);
        using var o = torch.zeros(4);
        using var scratch = new TestScratch([4]);
        Assert.True(session.BeginPass(0));
        var ex = Assert.Throws<InvalidOperationException>(() => session.Merge(Block(t, [t], o, scratch, [1.0], info, 0)));
        Assert.Contains("statistics", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Dare_drops_follow_the_counter_stream_in_vector_lanes_and_the_scalar_tail()
    {
        var rng = new Random(5);
        const int n = 1003;
        const long seed = 1234;
        var b = Random(rng, n);
        var x = Random(rng, n, 1, 0.2);
        var got = Run(new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.DareLinear), b, [x], [1.0], perModel: [new() { ["density"] = 0.3 }], seed: seed);

        var key = CounterRandom.StreamKey(seed);
        var threshold = CounterRandom.Threshold(0.3);
        // The kept entries are scaled by mergekit's L1 factor sum|d| / sum|kept d| (float32 deltas, summed in double,
        // element e into lane e mod 8 in order, lanes added 0 to 7, so the factor does not depend on the block size).
        var total = new double[8];
        var keptTotal = new double[8];
        for (var e = 0; e < n; e++)
        {
            var magnitude = MathF.Abs(x[e] - b[e]);
            total[e % 8] += magnitude;
            keptTotal[e % 8] += CounterRandom.Uniform24(key, e) < threshold ? magnitude : 0;
        }
        var factor = (float)(total.Sum() / keptTotal.Sum());
        for (var e = 0; e < n; e++)
        {
            var delta = x[e] - b[e];
            var kept = CounterRandom.Uniform24(key, e) < threshold ? delta * factor : 0f;
            Assert.Equal(b[e] + (1f * kept), got[e]);
        }
    }

    internal static IStreamingMergeStrategy Create(string method) => method switch
    {
        "task_arithmetic" => new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.TaskArithmetic),
        "ties" => new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.Ties),
        "dare_linear" => new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.DareLinear),
        "dare_ties" => new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.DareTies),
        "breadcrumbs" => new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.Breadcrumbs),
        "breadcrumbs_ties" => new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.BreadcrumbsTies),
        _ => throw new ArgumentException(method),
    };
}
