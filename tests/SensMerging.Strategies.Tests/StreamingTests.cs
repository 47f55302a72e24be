using SensMerging.Abstractions;
using SensMerging.Strategies.Breadcrumbs;
using SensMerging.Strategies.BreadcrumbsTies;
using SensMerging.Strategies.Common;
using SensMerging.Strategies.DareLinear;
using SensMerging.Strategies.DareTies;
using SensMerging.Strategies.TaskArithmetic;
using SensMerging.Strategies.Ties;
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
        var weights = new[] { 0.6, -0.4, 1.1 };
        var global = new Dictionary<string, object> { ["lambda"] = 0.8 };
        var perModel = new Dictionary<string, object>[]
        {
            new() { ["density"] = 0.5, ["gamma"] = 0.02 },
            new() { ["density"] = 0.25, ["gamma"] = 0.1 },
            new() { ["density"] = 0.9, ["gamma"] = 0.0 },
        };
        var whole = Run(strategy, b, xs, weights, global, perModel, seed: 99);

        foreach (var block in new[] { 3, 64, 333, n })
        {
            var streamed = Stream(strategy, b, xs, weights, global, perModel, seed: 99, block);
            Assert.Equal(whole.Select(BitConverter.SingleToInt32Bits), streamed.Select(BitConverter.SingleToInt32Bits));
        }
    }

    [Fact]
    public void Merge_before_the_statistics_end_is_a_clear_error()
    {
        var strategy = new TiesStrategy();
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
        var got = Run(new DareLinearStrategy(), b, [x], [1.0], perModel: [new() { ["density"] = 0.3 }], seed: seed);

        var key = CounterRandom.StreamKey(seed);
        var threshold = CounterRandom.Threshold(0.3);
        for (var e = 0; e < n; e++)
        {
            var delta = x[e] - b[e];
            var kept = CounterRandom.Uniform24(key, e) < threshold ? delta * (float)(1.0 / 0.3) : 0f;
            Assert.Equal(b[e] + (1f * kept), got[e]);
        }
    }

    private static IStreamingMergeStrategy Create(string method) => method switch
    {
        "task_arithmetic" => new TaskArithmeticStrategy(),
        "ties" => new TiesStrategy(),
        "dare_linear" => new DareLinearStrategy(),
        "dare_ties" => new DareTiesStrategy(),
        "breadcrumbs" => new BreadcrumbsStrategy(),
        "breadcrumbs_ties" => new BreadcrumbsTiesStrategy(),
        _ => throw new ArgumentException(method),
    };

    /// <summary>Drives the session protocol over blocks of <paramref name="block"/> elements, as a host would.</summary>
    private static float[] Stream(
        IStreamingMergeStrategy strategy, float[] b, float[][] xs, double[] weights, Dictionary<string, object> global,
        Dictionary<string, object>[] perModel, long seed, int block)
    {
        var n = b.Length;
        var info = Info(strategy, n, weights, global, perModel, seed);
        var result = new float[n];
        using var session = strategy.BeginTensor(info);
        for (var pass = 0; session.BeginPass(pass); pass++)
        {
            ForEachBlock(n, block, (start, count) => Apply(session.Observe, start, count));
        }
        ForEachBlock(n, block, (start, count) => Apply(session.Merge, start, count)
            .CopyTo(result.AsSpan(start, count)));
        return result;

        float[] Apply(Action<MergeTensorRequest> step, int start, int count)
        {
            using var scope = torch.NewDisposeScope();
            using var scratch = new TestScratch([count]);
            var output = torch.full(count, float.NaN);
            step(Block(
                torch.tensor(b[start..(start + count)]), [.. xs.Select(x => torch.tensor(x[start..(start + count)]))], output, scratch, weights, info, start));
            return output.data<float>().ToArray();
        }
    }

    private static void ForEachBlock(int n, int block, Action<int, int> action)
    {
        for (var start = 0; start < n; start += block)
        {
            action(start, Math.Min(block, n - start));
        }
    }

    private static MergeTensorInfo Info(
        IMergeStrategy strategy, long n, double[] weights, Dictionary<string, object>? global, Dictionary<string, object>[]? perModel, long seed) => new()
    {
        TensorName = "model.layers.0.mlp.up_proj.weight",
        LayerGroup = "model.layers.0",
        Shape = [n],
        HasBase = true,
        ModelNames = [.. weights.Select((_, i) => $"expert{i}")],
        Weights = weights,
        Parameters = Parameters(strategy, weights.Length, global, perModel),
        Seed = seed,
        LayerIndex = 0,
        LayerCount = 1,
    };

    private static MergeTensorRequest Block(
        torch.Tensor baseBlock, torch.Tensor[] models, torch.Tensor output, ITensorScratch scratch, double[] weights, MergeTensorInfo info, long start) => new()
    {
        TensorName = info.TensorName,
        LayerGroup = info.LayerGroup,
        Base = baseBlock,
        Models = models,
        ModelNames = info.ModelNames,
        Weights = weights,
        Parameters = info.Parameters,
        Output = output,
        Scratch = scratch,
        Seed = info.Seed,
        LayerIndex = info.LayerIndex,
        LayerCount = info.LayerCount,
        ElementStart = start,
    };
}
