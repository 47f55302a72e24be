using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json.Nodes;
using SensMerging.Core.SafeTensors;
using SensMerging.Runtime.Model;
using static TorchSharp.torch;

namespace SensMerging.Runtime.Tests;

/// <summary>Process-wide TorchSharp settings for the tests.</summary>
internal static class TestTorch
{
    /// <summary>
    /// One intra-op thread: on this shared 2-core machine libtorch's second OpenMP thread is often descheduled and every
    /// op waits for it (measured 440-880 ms per tiny training step with 2 threads vs 15-20 ms with 1 under load).
    /// </summary>
    public static void UseOneThread()
    {
        if (get_num_threads() != 1)
        {
            set_num_threads(1);
        }
    }
}

/// <summary>A temporary folder removed on dispose.</summary>
internal sealed class TempFolder : IDisposable
{
    public TempFolder()
    {
        TestTorch.UseOneThread();
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "sensmerge-runtime-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string Sub(string name)
    {
        var path = System.IO.Path.Combine(Path, name);
        Directory.CreateDirectory(path);
        return path;
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

/// <summary>
/// Weights of a tiny Llama made in the test with System.Random (row-major float arrays by Hugging Face name), written
/// as F32 with Core's safetensors writer and a hand-made word-level tokenizer.json of 32 tokens.
/// </summary>
internal sealed class TinyModel
{
    public static readonly string[] Words = BuildWords();

    public TinyModel(LlamaConfig config, int seed, double scale = 0.3)
    {
        Config = config;
        var random = new Random(seed);
        var h = config.HiddenSize;
        var d = config.HeadDim;
        Add("model.embed_tokens.weight", [config.VocabSize, h], random, scale * 3, 0);
        for (var l = 0; l < config.NumHiddenLayers; l++)
        {
            var p = "model.layers." + l.ToString(CultureInfo.InvariantCulture) + ".";
            Add(p + "input_layernorm.weight", [h], random, 0.2, 1);
            Add(p + "self_attn.q_proj.weight", [config.NumAttentionHeads * d, h], random, scale, 0);
            Add(p + "self_attn.k_proj.weight", [config.NumKeyValueHeads * d, h], random, scale, 0);
            Add(p + "self_attn.v_proj.weight", [config.NumKeyValueHeads * d, h], random, scale, 0);
            Add(p + "self_attn.o_proj.weight", [h, config.NumAttentionHeads * d], random, scale, 0);
            if (config.AttentionBias)
            {
                Add(p + "self_attn.q_proj.bias", [config.NumAttentionHeads * d], random, scale, 0);
                Add(p + "self_attn.k_proj.bias", [config.NumKeyValueHeads * d], random, scale, 0);
                Add(p + "self_attn.v_proj.bias", [config.NumKeyValueHeads * d], random, scale, 0);
                Add(p + "self_attn.o_proj.bias", [h], random, scale, 0);
            }
            Add(p + "post_attention_layernorm.weight", [h], random, 0.2, 1);
            Add(p + "mlp.gate_proj.weight", [config.IntermediateSize, h], random, scale, 0);
            Add(p + "mlp.up_proj.weight", [config.IntermediateSize, h], random, scale, 0);
            Add(p + "mlp.down_proj.weight", [h, config.IntermediateSize], random, scale, 0);
        }
        Add("model.norm.weight", [h], random, 0.2, 1);
        if (!config.TieWordEmbeddings)
        {
            Add("lm_head.weight", [config.VocabSize, h], random, scale, 0);
        }
    }

    public LlamaConfig Config { get; }

    public Dictionary<string, float[]> Weights { get; } = new(StringComparer.Ordinal);

    public Dictionary<string, long[]> Shapes { get; } = new(StringComparer.Ordinal);

    public static LlamaConfig SmallConfig(bool tied = false, int? slidingWindow = null, string type = "llama", bool bias = false) => new()
    {
        ModelType = type,
        HiddenSize = 16,
        IntermediateSize = 24,
        NumHiddenLayers = 2,
        NumAttentionHeads = 4,
        NumKeyValueHeads = 2,
        RmsNormEps = 1e-5,
        RopeTheta = 10000,
        MaxPositionEmbeddings = 64,
        VocabSize = 32,
        TieWordEmbeddings = tied,
        SlidingWindow = slidingWindow,
        AttentionBias = bias,
    };

    /// <summary>Writes config.json, tokenizer.json and the weights (one file, or <paramref name="shards"/> files + index).</summary>
    public void Write(string directory, int shards = 1)
    {
        Config.Save(directory);
        File.WriteAllText(Path.Combine(directory, "tokenizer.json"), WordTokenizerJson());
        var names = Weights.Keys.Order(StringComparer.Ordinal).ToList();
        if (shards == 1)
        {
            WriteFile(Path.Combine(directory, "model.safetensors"), names);
            return;
        }
        var map = new JsonObject();
        for (var s = 0; s < shards; s++)
        {
            var file = $"model-{s + 1:00000}-of-{shards:00000}.safetensors";
            var part = names.Where((_, i) => i % shards == s).ToList();
            WriteFile(Path.Combine(directory, file), part);
            foreach (var name in part)
            {
                map[name] = file;
            }
        }
        var index = new JsonObject { ["metadata"] = new JsonObject { ["total_size"] = 0 }, ["weight_map"] = map };
        File.WriteAllText(Path.Combine(directory, "model.safetensors.index.json"), index.ToJsonString());
    }

    /// <summary>A WordLevel tokenizer.json: &lt;pad&gt; &lt;s&gt; &lt;/s&gt; &lt;unk&gt; and 28 words, whitespace split, BOS template.</summary>
    public static string WordTokenizerJson()
    {
        var vocab = new JsonObject();
        for (var i = 0; i < Words.Length; i++)
        {
            vocab[Words[i]] = i;
        }
        var added = new JsonArray();
        for (var i = 0; i < 4; i++)
        {
            added.Add(new JsonObject { ["id"] = i, ["content"] = Words[i], ["special"] = true });
        }
        var root = new JsonObject
        {
            ["version"] = "1.0",
            ["added_tokens"] = added,
            ["pre_tokenizer"] = new JsonObject { ["type"] = "WhitespaceSplit" },
            ["post_processor"] = JsonNode.Parse("""{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<s>","type_id":0}},{"Sequence":{"id":"A","type_id":0}}]}"""),
            ["model"] = new JsonObject { ["type"] = "WordLevel", ["vocab"] = vocab, ["unk_token"] = "<unk>" },
        };
        return root.ToJsonString();
    }

    private static string[] BuildWords()
    {
        var words = new List<string> { "<pad>", "<s>", "</s>", "<unk>" };
        for (var c = 'a'; c <= 'z'; c++)
        {
            words.Add(c.ToString());
        }
        words.Add("0");
        words.Add("1");
        return words.ToArray();
    }

    private void WriteFile(string path, IReadOnlyList<string> names)
    {
        var plan = names.Select(n => new TensorPlanEntry(n, SafeTensorsDType.F32, Shapes[n])).ToList();
        using var writer = new SafeTensorsWriter(path, plan, computeSha256: false);
        foreach (var name in names)
        {
            writer.WriteTensor(name, MemoryMarshal.AsBytes(Weights[name].AsSpan()));
        }
        writer.Complete();
    }

    private void Add(string name, long[] shape, Random random, double scale, double offset)
    {
        var count = (int)shape.Aggregate(1L, (a, b) => a * b);
        var values = new float[count];
        for (var i = 0; i < count; i++)
        {
            values[i] = (float)(offset + (scale * ((random.NextDouble() * 2) - 1)));
        }
        Weights[name] = values;
        Shapes[name] = shape;
    }
}
