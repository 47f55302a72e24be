using SensMerging.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace MyStrategy.Tests;

/// <summary>The strategy on a tiny model (a base and two experts of three small tensors), against the formula in double.</summary>
public sealed class StrategyTests
{
    [Fact]
    public void Merges_every_tensor_of_a_tiny_model_as_base_plus_lambda_times_the_weighted_task_vectors()
    {
        var strategy = new Strategy();
        var shapes = new Dictionary<string, long[]>
        {
            ["model.embed_tokens.weight"] = [5, 4],
            ["model.layers.0.mlp.up_proj.weight"] = [6, 4],
            ["model.norm.weight"] = [4],
        };
        double[] weights = [0.7, 1.3];
        const double lambda = 0.5;
        var random = new Random(7);
        foreach (var (name, shape) in shapes)
        {
            var n = (int)shape.Aggregate(1L, (a, b) => a * b);
            var values = Enumerable.Range(0, 3).Select(_ => Enumerable.Range(0, n).Select(_ => (float)(random.NextDouble() - 0.5)).ToArray()).ToArray();
            using var scratch = new TestScratch(shape);
            using var baseTensor = tensor(values[0]).reshape(shape);
            using var expert0 = tensor(values[1]).reshape(shape);
            using var expert1 = tensor(values[2]).reshape(shape);
            using var output = empty(shape);
            strategy.Merge(new MergeTensorRequest
            {
                TensorName = name,
                LayerGroup = LayerGroups.Of(name),
                Base = baseTensor,
                Models = [expert0, expert1],
                ModelNames = ["expert0", "expert1"],
                Weights = weights,
                Parameters = new ResolvedParameters(new Dictionary<string, object> { ["lambda"] = lambda }, []),
                Output = output,
                Scratch = scratch,
            });

            var actual = output.data<float>().ToArray();
            for (var e = 0; e < n; e++)
            {
                var expected = values[0][e] + (lambda * ((weights[0] * (values[1][e] - values[0][e])) + (weights[1] * (values[2][e] - values[0][e]))));
                Assert.True(Math.Abs(actual[e] - expected) <= 1e-6 + (1e-5 * Math.Abs(expected)), $"{name}[{e}]: {actual[e]} != {expected}");
            }
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
