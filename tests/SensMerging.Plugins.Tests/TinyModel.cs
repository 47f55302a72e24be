using SensMerging.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Plugins.Tests;

/// <summary>
/// A small real causal LM for the scorer tests, independent of src/SensMerging.Runtime:
/// h = E[ids]; h += tanh(h W0^T); h += tanh(h W1^T); h *= n; logits = h H^T, with next-token cross-entropy.
/// Weights live in a folder as <c>weights.bin</c> (name, shape, float32 data).
/// </summary>
internal sealed class TinyRuntime : IModelRuntime
{
    public int Loads { get; private set; }

    /// <summary>Simulates a runtime that loads without gradients whatever it is asked.</summary>
    public bool IgnoreRequiresGrad { get; init; }

    public ICausalLanguageModel Load(string modelPath, ModelLoadOptions options, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        Loads++;
        return TinyLanguageModel.Load(modelPath, IgnoreRequiresGrad ? options with { RequiresGrad = false } : options);
    }
}

internal static class TinyModelFiles
{
    public static readonly string[] Names =
        ["model.embed_tokens.weight", "model.layers.0.mlp.weight", "model.layers.1.mlp.weight", "model.norm.weight", "lm_head.weight"];

    /// <summary>Random weights (seeded) for hidden size <paramref name="hidden"/>; <paramref name="zero"/> names weights set to 0.</summary>
    public static Dictionary<string, (long[] Shape, float[] Data)> Random(int seed, int hidden = 8, params string[] zero)
    {
        var v = CharTokenizer.Size;
        var rng = new Random(seed);
        (long[], float[]) Make(long[] shape, double scale, double offset = 0)
        {
            var data = new float[shape.Aggregate(1L, (a, b) => a * b)];
            for (var i = 0; i < data.Length; i++)
            {
                data[i] = (float)(offset + scale * (rng.NextDouble() * 2 - 1));
            }
            return (shape, data);
        }
        var weights = new Dictionary<string, (long[], float[])>
        {
            [Names[0]] = Make([v, hidden], 1.0),
            [Names[1]] = Make([hidden, hidden], 1.0 / Math.Sqrt(hidden)),
            [Names[2]] = Make([hidden, hidden], 1.0 / Math.Sqrt(hidden)),
            [Names[3]] = Make([hidden], 0.2, 1.0),
            [Names[4]] = Make([v, hidden], 1.0 / Math.Sqrt(hidden)),
        };
        foreach (var name in zero)
        {
            Array.Clear(weights[name].Item2);
        }
        return weights;
    }

    public static string Write(string folder, Dictionary<string, (long[] Shape, float[] Data)> weights)
    {
        Directory.CreateDirectory(folder);
        using var stream = File.Create(Path.Combine(folder, "weights.bin"));
        using var writer = new BinaryWriter(stream);
        writer.Write(weights.Count);
        foreach (var name in Names.Where(weights.ContainsKey))
        {
            var (shape, data) = weights[name];
            writer.Write(name);
            writer.Write(shape.Length);
            foreach (var d in shape)
            {
                writer.Write(d);
            }
            foreach (var x in data)
            {
                writer.Write(x);
            }
        }
        return folder;
    }

    public static List<(string Name, long[] Shape, float[] Data)> Read(string folder)
    {
        var path = Path.Combine(folder, "weights.bin");
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"no tiny model in '{folder}'", path);
        }
        using var reader = new BinaryReader(File.OpenRead(path));
        var count = reader.ReadInt32();
        var result = new List<(string, long[], float[])>(count);
        for (var k = 0; k < count; k++)
        {
            var name = reader.ReadString();
            var shape = new long[reader.ReadInt32()];
            for (var d = 0; d < shape.Length; d++)
            {
                shape[d] = reader.ReadInt64();
            }
            var data = new float[shape.Aggregate(1L, (a, b) => a * b)];
            for (var i = 0; i < data.Length; i++)
            {
                data[i] = reader.ReadSingle();
            }
            result.Add((name, shape, data));
        }
        return result;
    }
}

internal sealed class TinyLanguageModel : ICausalLanguageModel
{
    private readonly List<(string Name, Tensor Weight)> _weights;
    private readonly Tensor _embed, _w0, _w1, _norm, _head;

    private TinyLanguageModel(string path, List<(string Name, Tensor Weight)> weights)
    {
        ModelPath = path;
        _weights = weights;
        Tensor W(string name) => weights.Single(w => w.Name == name).Weight;
        _embed = W(TinyModelFiles.Names[0]);
        _w0 = W(TinyModelFiles.Names[1]);
        _w1 = W(TinyModelFiles.Names[2]);
        _norm = W(TinyModelFiles.Names[3]);
        _head = W(TinyModelFiles.Names[4]);
    }

    public static TinyLanguageModel Load(string path, ModelLoadOptions options)
    {
        var weights = new List<(string, Tensor)>();
        foreach (var (name, shape, data) in TinyModelFiles.Read(path))
        {
            using var scope = NewDisposeScope();
            var t = tensor(data, shape, dtype: ScalarType.Float32).to(options.Dtype).to(options.Device).requires_grad_(options.RequiresGrad);
            weights.Add((name, t.DetachFromDisposeScope()));
        }
        return new TinyLanguageModel(path, weights);
    }

    public string ModelPath { get; }

    public int VocabularySize => CharTokenizer.Size;

    public int LayerCount => 2;

    public ITextTokenizer Tokenizer { get; } = new CharTokenizer();

    public IReadOnlyList<(string Name, Tensor Weight)> NamedWeights => _weights;

    public Tensor Forward(Tensor inputIds)
    {
        var b = inputIds.shape[0];
        var l = inputIds.shape[1];
        var h = _embed.index_select(0, inputIds.flatten()).view(b, l, -1);
        h = h + h.matmul(_w0.t()).tanh();
        h = h + h.matmul(_w1.t()).tanh();
        h = h * _norm;
        return h.matmul(_head.t());
    }

    public Tensor Loss(TokenizedSample sample)
    {
        var positions = new List<long>();
        var targets = new List<long>();
        for (var t = 0; t < sample.Length - 1; t++)
        {
            if (sample.LossMask[t])
            {
                positions.Add(t);
                targets.Add(sample.Ids[t + 1]);
            }
        }
        var logits = Forward(tensor(sample.Ids, dtype: ScalarType.Int64).unsqueeze(0))[0];
        var picked = logits.index_select(0, tensor(positions.ToArray(), dtype: ScalarType.Int64));
        return nn.functional.cross_entropy(picked, tensor(targets.ToArray(), dtype: ScalarType.Int64));
    }

    public void ZeroGradients()
    {
        foreach (var (_, w) in _weights)
        {
            using var g = w.grad;
            g?.zero_();
        }
    }

    public void Dispose()
    {
        foreach (var (_, w) in _weights)
        {
            w.Dispose();
        }
        _weights.Clear();
    }
}

/// <summary>Characters to ids: 0 is BOS, 1 unknown, then the alphabet.</summary>
internal sealed class CharTokenizer : ITextTokenizer
{
    private const string Alphabet = " abcdefghijklmnopqrstuvwxyz.,?!'0123456789";

    public static int Size => Alphabet.Length + 2;

    public int EosTokenId => -1;

    public TokenizedSample Encode(TextSample sample, int maxLength)
    {
        var prompt = EncodeText(sample.Prompt);
        var response = sample.Response is null ? [] : EncodeText(sample.Response);
        var ids = new List<long> { 0 };
        ids.AddRange(prompt.Select(i => (long)i));
        ids.AddRange(response.Select(i => (long)i));
        var length = Math.Min(ids.Count, maxLength);
        var mask = new bool[length];
        var firstScored = sample.Response is null ? 1 : 1 + prompt.Count;
        for (var t = 0; t < length - 1; t++)
        {
            mask[t] = t + 1 >= firstScored;
        }
        return new TokenizedSample(ids.Take(length).ToArray(), mask);
    }

    public IReadOnlyList<int> EncodeText(string text) =>
        text.ToLowerInvariant().Select(c => Alphabet.IndexOf(c, StringComparison.Ordinal) is var k and >= 0 ? k + 2 : 1).ToArray();

    public string Decode(IEnumerable<int> ids) => new(ids.Where(i => i >= 2).Select(i => Alphabet[i - 2]).ToArray());
}
