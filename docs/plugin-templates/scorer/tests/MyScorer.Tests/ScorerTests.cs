using Microsoft.Extensions.Logging.Abstractions;
using SensMerging.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace MyScorer.Tests;

/// <summary>
/// The scorer on a tiny language model (embeddings, one linear layer, a head; five tokens), against gradients
/// derived by hand and computed in double.
/// </summary>
public sealed class ScorerTests
{
    private const int Vocabulary = 5;
    private const int Width = 3;

    [Fact]
    public async Task Scores_each_layer_group_by_the_mean_gradient_norm_derived_by_hand()
    {
        var random = new Random(3);
        double[] Values(int n) => [.. Enumerable.Range(0, n).Select(_ => random.NextDouble() - 0.5)];
        var models = new Dictionary<string, TinyWeights>
        {
            ["/models/math"] = new(Values(Vocabulary * Width), Values(Width * Width), Values(Vocabulary * Width)),
            ["/models/code"] = new(Values(Vocabulary * Width), Values(Width * Width), Values(Vocabulary * Width)),
        };
        TextSample[] samples = [new("abcab"), new("eddca"), new("b")]; // "b" has nothing to predict: skipped
        var context = new ScoringContext
        {
            Models =
            [
                new ScoredModel("math", "/models/math", new TextDataset("math", "memory", samples, 16)),
                new ScoredModel("code", "/models/code", new TextDataset("code", "memory", samples, 16)),
            ],
            Runtime = new TinyRuntime(models),
            Parameters = new ResolvedParameters(new Dictionary<string, object>(), []),
            Logger = NullLogger.Instance,
        };

        var table = await new Scorer().ScoreAsync(context, CancellationToken.None);

        Assert.Equal(["math", "code"], table.Rows);
        Assert.Equal(["model.embed_tokens", "model.layers.0", "lm_head"], table.Columns);
        for (var row = 0; row < 2; row++)
        {
            var weights = models[context.Models[row].ModelPath];
            var expected = new double[3];
            foreach (var sample in samples.Take(2))
            {
                var grads = HandGradients(weights, [.. sample.Prompt.Select(c => c - 'a')]);
                for (var g = 0; g < 3; g++)
                {
                    expected[g] += Math.Sqrt(grads[g].Sum(x => x * x)) / 2;
                }
            }
            for (var g = 0; g < 3; g++)
            {
                Assert.True(Math.Abs(table[row, g] - expected[g]) <= 1e-4 * expected[g], $"row {row}, {table.Columns[g]}: {table[row, g]} != {expected[g]}");
            }
        }
    }

    /// <summary>
    /// Gradients of the mean next-token cross-entropy of the tiny model, by the chain rule: e_t = E[x_t], h_t = P e_t,
    /// z_t = H h_t, g_t = (softmax(z_t) - onehot(x_t+1)) / n; dH = sum g_t h_t^T, dh_t = H^T g_t, dP = sum dh_t e_t^T,
    /// dE[x_t] += P^T dh_t. Returns dE, dP, dH (row-major).
    /// </summary>
    private static double[][] HandGradients(TinyWeights w, int[] ids)
    {
        var dE = new double[Vocabulary * Width];
        var dP = new double[Width * Width];
        var dH = new double[Vocabulary * Width];
        var n = ids.Length - 1;
        for (var t = 0; t < n; t++)
        {
            var e = Enumerable.Range(0, Width).Select(b => w.Embeddings[(ids[t] * Width) + b]).ToArray();
            var h = Enumerable.Range(0, Width).Select(a => Enumerable.Range(0, Width).Sum(b => w.Layer[(a * Width) + b] * e[b])).ToArray();
            var z = Enumerable.Range(0, Vocabulary).Select(v => Enumerable.Range(0, Width).Sum(a => w.Head[(v * Width) + a] * h[a])).ToArray();
            var max = z.Max();
            var exp = z.Select(x => Math.Exp(x - max)).ToArray();
            var g = exp.Select((x, v) => ((x / exp.Sum()) - (v == ids[t + 1] ? 1 : 0)) / n).ToArray();
            var dh = new double[Width];
            for (var v = 0; v < Vocabulary; v++)
            {
                for (var a = 0; a < Width; a++)
                {
                    dH[(v * Width) + a] += g[v] * h[a];
                    dh[a] += g[v] * w.Head[(v * Width) + a];
                }
            }
            for (var a = 0; a < Width; a++)
            {
                for (var b = 0; b < Width; b++)
                {
                    dP[(a * Width) + b] += dh[a] * e[b];
                    dE[(ids[t] * Width) + b] += dh[a] * w.Layer[(a * Width) + b];
                }
            }
        }
        return [dE, dP, dH];
    }

    private sealed record TinyWeights(double[] Embeddings, double[] Layer, double[] Head);

    /// <summary>Loads <see cref="TinyModel"/>s by path from weights in memory.</summary>
    private sealed class TinyRuntime(IReadOnlyDictionary<string, TinyWeights> models) : IModelRuntime
    {
        public ICausalLanguageModel Load(string modelPath, ModelLoadOptions options, CancellationToken cancellationToken) =>
            new TinyModel(modelPath, models[modelPath], options.RequiresGrad);
    }

    /// <summary>logits = H (P E[x]); tokens are the letters a to e.</summary>
    private sealed class TinyModel : ICausalLanguageModel
    {
        private readonly Tensor _embeddings;
        private readonly Tensor _layer;
        private readonly Tensor _head;

        public TinyModel(string path, TinyWeights weights, bool requiresGrad)
        {
            ModelPath = path;
            _embeddings = tensor(weights.Embeddings.Select(x => (float)x).ToArray()).reshape(Vocabulary, Width).requires_grad_(requiresGrad);
            _layer = tensor(weights.Layer.Select(x => (float)x).ToArray()).reshape(Width, Width).requires_grad_(requiresGrad);
            _head = tensor(weights.Head.Select(x => (float)x).ToArray()).reshape(Vocabulary, Width).requires_grad_(requiresGrad);
            NamedWeights = [("model.embed_tokens.weight", _embeddings), ("model.layers.0.mlp.proj.weight", _layer), ("lm_head.weight", _head)];
        }

        public string ModelPath { get; }

        public int VocabularySize => Vocabulary;

        public int LayerCount => 1;

        public ITextTokenizer Tokenizer { get; } = new Letters();

        public IReadOnlyList<(string Name, Tensor Weight)> NamedWeights { get; }

        public Tensor Forward(Tensor inputIds) =>
            nn.functional.linear(nn.functional.linear(_embeddings.index_select(0, inputIds.reshape(-1)), _layer), _head).reshape(inputIds.shape[0], inputIds.shape[1], Vocabulary);

        public Tensor Loss(TokenizedSample sample)
        {
            using var ids = tensor(sample.Ids).reshape(1, -1);
            var logits = Forward(ids)[0];
            var scored = Enumerable.Range(0, sample.Length - 1).Where(t => sample.LossMask[t]).Select(t => (long)t).ToArray();
            using var positions = tensor(scored);
            using var targets = tensor(scored.Select(t => sample.Ids[t + 1]).ToArray());
            return nn.functional.cross_entropy(logits.index_select(0, positions), targets);
        }

        public void ZeroGradients()
        {
            using var scope = NewDisposeScope();
            foreach (var (_, weight) in NamedWeights)
            {
                weight.grad?.zero_();
            }
        }

        public void Dispose()
        {
            _embeddings.Dispose();
            _layer.Dispose();
            _head.Dispose();
        }
    }

    private sealed class Letters : ITextTokenizer
    {
        public int EosTokenId => -1;

        public TokenizedSample Encode(TextSample sample, int maxLength)
        {
            var ids = EncodeText(sample.FullText).Take(maxLength).Select(id => (long)id).ToArray();
            return new TokenizedSample(ids, [.. ids.Select(_ => true)]);
        }

        public IReadOnlyList<int> EncodeText(string text) => [.. text.Select(c => c - 'a')];

        public string Decode(IEnumerable<int> ids) => new([.. ids.Select(id => (char)('a' + id))]);
    }
}
