using Microsoft.Extensions.Logging.Abstractions;
using SensMerging.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace MyDecorator.Tests;

/// <summary>
/// The decorator around a weighted mean, on the tensors of a tiny two-expert model, with a scorer table given by the
/// test: the merged values must be the weighted mean with weights w_i (S_i^l / mean_j S_j^l)^strength, in double.
/// </summary>
public sealed class DecoratorTests
{
    [Fact]
    public async Task Steers_the_inner_strategy_with_each_experts_score_share_per_layer_group()
    {
        string[] groups = ["model.embed_tokens", "model.layers.0", "lm_head"];
        double[][] scores = [[1.0, 3.0, 2.0], [3.0, 1.0, 2.0]];
        const double strength = 0.5;
        var experts = new[] { "math", "code" }.Select(n => new ScoredModel(n, "/models/" + n, null)).ToArray();
        var decorator = new Decorator();
        var decorated = await decorator.DecorateAsync(new WeightedMean(), new DecoratorContext
        {
            Experts = experts,
            LayerGroups = groups,
            Parameters = new ResolvedParameters(new Dictionary<string, object> { ["scorer"] = "fixed", ["strength"] = strength }, []),
            Scorers = new Catalog(new FixedScorer(new ScoreTable("fixed", ScorerKind.TaskSpecific, ["math", "code"], groups, scores))),
            Runtime = new NoRuntime(),
            Logger = NullLogger.Instance,
        }, CancellationToken.None);

        Assert.Equal("my_component(weighted_mean)", decorated.Name);
        var coefficients = decorated.Report.Tables.Single(t => t.Scorer == "coefficients");
        double[] configured = [1.0, 2.0];
        var random = new Random(5);
        foreach (var (name, group) in new[] { ("model.embed_tokens.weight", 0), ("model.layers.0.self_attn.q_proj.weight", 1), ("lm_head.weight", 2) })
        {
            var x = Enumerable.Range(0, 2).Select(_ => Enumerable.Range(0, 6).Select(_ => (float)random.NextDouble()).ToArray()).ToArray();
            using var x0 = tensor(x[0]);
            using var x1 = tensor(x[1]);
            using var output = empty(6);
            decorated.Merge(new MergeTensorRequest
            {
                TensorName = name,
                LayerGroup = LayerGroups.Of(name),
                Models = [x0, x1],
                ModelNames = ["math", "code"],
                Weights = configured,
                Parameters = new ResolvedParameters(new Dictionary<string, object>(), []),
                Output = output,
                Scratch = null!, // the weighted mean rents nothing
            });

            var mean = (scores[0][group] + scores[1][group]) / 2;
            var w = Enumerable.Range(0, 2).Select(i => configured[i] * Math.Pow(scores[i][group] / mean, strength)).ToArray();
            Assert.Equal(w[0] / configured[0], coefficients[0, group], 12);
            Assert.Equal(w[1] / configured[1], coefficients[1, group], 12);
            var actual = output.data<float>().ToArray();
            for (var e = 0; e < 6; e++)
            {
                var expected = ((w[0] * x[0][e]) + (w[1] * x[1][e])) / (w[0] + w[1]);
                Assert.True(Math.Abs(actual[e] - expected) <= 1e-6, $"{name}[{e}]: {actual[e]} != {expected}");
            }
        }
    }

    /// <summary>sum_i w_i x_i / sum_i w_i: an inner strategy that shows which weights it was given.</summary>
    private sealed class WeightedMean : IMergeStrategy
    {
        public string Name => "weighted_mean";

        public string Description => "Weighted mean.";

        public IReadOnlyList<ParameterSpec> Parameters { get; } = [];

        public StrategyTraits Traits { get; } = new(RequiresBaseModel: false, Elementwise: true);

        public void Merge(MergeTensorRequest request)
        {
            request.Output.zero_();
            for (var i = 0; i < request.Models.Count; i++)
            {
                request.Output.add_(request.Models[i], alpha: request.Weights[i]);
            }
            request.Output.div_(request.Weights.Sum());
        }
    }

    private sealed class FixedScorer(ScoreTable table) : IScorer
    {
        public string Name => table.Scorer;

        public string Description => "A table given by the test.";

        public IReadOnlyList<ParameterSpec> Parameters { get; } = [];

        public ScorerKind Kind => table.Kind;

        public Task<ScoreTable> ScoreAsync(ScoringContext context, CancellationToken cancellationToken) => Task.FromResult(table);
    }

    private sealed class Catalog(IScorer scorer) : IScorerCatalog
    {
        public IScorer Get(string name) => name == scorer.Name ? scorer : throw new KeyNotFoundException(name);

        public ResolvedParameters ResolveParameters(IScorer scorer, IReadOnlyDictionary<string, object> values) =>
            new(new Dictionary<string, object>(), []);
    }

    private sealed class NoRuntime : IModelRuntime
    {
        public ICausalLanguageModel Load(string modelPath, ModelLoadOptions options, CancellationToken cancellationToken) =>
            throw new InvalidOperationException("the fixed scorer loads no model");
    }
}
