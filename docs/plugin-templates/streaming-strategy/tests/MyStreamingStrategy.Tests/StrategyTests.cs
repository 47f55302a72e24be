using SensMerging.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace MyStreamingStrategy.Tests;

/// <summary>The strategy on a tensor of a tiny model, whole and streamed in blocks, against the formula in double.</summary>
public sealed class StrategyTests
{
    [Fact]
    public void Whole_and_streamed_merges_match_the_norm_matched_mean_computed_in_double()
    {
        const string name = "model.layers.0.mlp.up_proj.weight";
        long[] shape = [6, 7];
        const int n = 42;
        double[] weights = [0.5, 1.0, 2.5];
        var random = new Random(11);
        var values = Enumerable.Range(0, 4).Select(_ => Enumerable.Range(0, n).Select(_ => (float)(random.NextDouble() - 0.5)).ToArray()).ToArray();

        // The formula, independently: p_i = w_i / sum w; m = sum p_i d_i; out = base + (sum_i p_i |d_i|) / |m| * m.
        var p = weights.Select(w => w / weights.Sum()).ToArray();
        var d = Enumerable.Range(0, 3).Select(i => Enumerable.Range(0, n).Select(e => (double)values[i + 1][e] - values[0][e]).ToArray()).ToArray();
        var m = Enumerable.Range(0, n).Select(e => Enumerable.Range(0, 3).Sum(i => p[i] * d[i][e])).ToArray();
        var target = Enumerable.Range(0, 3).Sum(i => p[i] * Math.Sqrt(d[i].Sum(x => x * x)));
        var scale = target / Math.Sqrt(m.Sum(x => x * x));
        var expected = Enumerable.Range(0, n).Select(e => values[0][e] + (scale * m[e])).ToArray();

        var strategy = new Strategy();
        using var baseTensor = tensor(values[0]).reshape(shape);
        var models = Enumerable.Range(1, 3).Select(i => tensor(values[i]).reshape(shape)).ToArray();
        var parameters = new ResolvedParameters(new Dictionary<string, object>(), []);
        MergeTensorRequest Request(Tensor? baseBlock, IReadOnlyList<Tensor> modelBlocks, Tensor output, long start, ITensorScratch scratch) => new()
        {
            TensorName = name,
            LayerGroup = LayerGroups.Of(name),
            Base = baseBlock,
            Models = modelBlocks,
            ModelNames = ["a", "b", "c"],
            Weights = weights,
            Parameters = parameters,
            Output = output,
            Scratch = scratch,
            ElementStart = start,
        };

        // Whole tensor.
        using var whole = empty(shape);
        using (var scratch = new TestScratch(shape))
        {
            strategy.Merge(Request(baseTensor, models, whole, 0, scratch));
        }

        // Streamed as the host does it: blocks of 10 elements (flat ranges), a statistics pass, then the merge pass.
        using var streamed = empty(shape);
        using (var session = strategy.BeginTensor(new MergeTensorInfo
        {
            TensorName = name,
            LayerGroup = LayerGroups.Of(name),
            Shape = shape,
            HasBase = true,
            ModelNames = ["a", "b", "c"],
            Weights = weights,
            Parameters = parameters,
        }))
        {
            const int blockSize = 10;
            void EachBlock(Action<MergeTensorRequest> action)
            {
                for (var start = 0; start < n; start += blockSize)
                {
                    var length = Math.Min(blockSize, n - start);
                    using var scope = NewDisposeScope(); // the block views made here
                    using var scratch = new TestScratch([length]);
                    action(Request(baseTensor.view(-1).narrow(0, start, length), [.. models.Select(t => t.view(-1).narrow(0, start, length))],
                        streamed.view(-1).narrow(0, start, length), start, scratch));
                }
            }
            for (var pass = 0; session.BeginPass(pass); pass++)
            {
                EachBlock(session.Observe);
            }
            EachBlock(session.Merge);
        }

        var wholeValues = whole.data<float>().ToArray();
        var streamedValues = streamed.data<float>().ToArray();
        for (var e = 0; e < n; e++)
        {
            Assert.True(Math.Abs(wholeValues[e] - expected[e]) <= 1e-6 + (1e-5 * Math.Abs(expected[e])), $"[{e}]: {wholeValues[e]} != {expected[e]}");
        }
        Assert.Equal(wholeValues, streamedValues); // bit for bit: the result must not depend on the block size
        foreach (var t in models)
        {
            t.Dispose();
        }
    }

    /// <summary>What the host's scratch pool does, simply: fresh tensors, disposed with the scratch.</summary>
    private sealed class TestScratch(long[] shape) : ITensorScratch, IDisposable
    {
        private readonly List<Tensor> _rented = [];

        public Tensor Rent(ScalarType dtype = ScalarType.Float32) => Rent(shape, dtype);

        public Tensor Rent(long[] shape, ScalarType dtype = ScalarType.Float32)
        {
            var t = empty(shape, dtype);
            _rented.Add(t);
            return t;
        }

        public void Dispose() => _rented.ForEach(t => t.Dispose());
    }
}
