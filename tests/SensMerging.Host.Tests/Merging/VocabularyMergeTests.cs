using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using SensMerging.Core.SafeTensors;

namespace SensMerging.Host.Tests.Merging;

/// <summary>
/// Models whose vocabularies differ, merged by <c>sensmerge merge</c> under each of mergekit's tokenizer settings. Three
/// tiny models with real BPE <c>tokenizer.json</c> files: a base of 9 tokens (its tokenizer also lists a 10th, beyond its
/// vocab_size, which mergekit strips), a ChatML fine-tune with the base's tokens plus <c>&lt;|im_start|&gt;</c> and
/// <c>&lt;|im_end|&gt;</c>, and a tools fine-tune without the base's <c>e</c> but with an ordinary token <c>cd</c>,
/// <c>&lt;|im_start|&gt;</c> and <c>&lt;tool&gt;</c> (12 embedding rows, one of them padding). So every rule of mergekit's
/// is used: a token only one model has (its row), one the base and another have (the base's row for the third), one two
/// fine-tunes have and the base lacks (their mean), and the <c>tokens</c> entries. The embedding / lm_head rows and the output vocabulary are checked against
/// <c>Reference/vocab_reference.py</c>, an independent plain-PyTorch implementation of mergekit's rules (Debian's
/// python3-torch as /usr/bin/python3), the legacy common sub-matrix against rows built here by hand.
/// </summary>
public sealed class VocabularyMergeTests : IDisposable
{
    private const int Hidden = 4;
    private const string Python = "/usr/bin/python3";
    private static readonly string[] Embeddings = ["model.embed_tokens.weight", "lm_head.weight"];

    private readonly string _root = TestPaths.NewTempDir("vocab");
    private readonly string _plugins = Path.Combine(TestPaths.RepoRoot, "plugins.json");
    private readonly string _base;
    private readonly string _chatml;
    private readonly string _tools;
    private readonly Dictionary<string, Dictionary<string, float[]>> _weights = [];

    public VocabularyMergeTests()
    {
        var special = new[] { "<unk>", "<s>", "</s>" };
        string[] common = ["<unk>", "<s>", "</s>", "a", "b", "ab", "c", "d"];
        _base = WriteModel("base", 1, [.. common, "e"], [.. special, "<extra>"], ["a b"], vocabSize: 9, rows: 9);
        _chatml = WriteModel("chatml", 2, [.. common, "e"], [.. special, "<|im_start|>", "<|im_end|>"], ["a b"], vocabSize: 11, rows: 11);
        _tools = WriteModel("tools", 3, [.. common, "cd"], [.. special, "<|im_start|>", "<tool>"], ["a b", "c d"], vocabSize: 12, rows: 12);
    }

    public void Dispose() => Directory.Delete(_root, recursive: true);

    [Fact]
    public async Task Without_a_tokenizer_source_embeddings_are_merged_on_their_common_sub_matrix()
    {
        var output = await Merge("legacy", TaskArithmetic(""));

        // Each model's first 9 rows: base + 0.7 (chatml - base) + 0.5 (tools - base), in float32.
        foreach (var name in Embeddings)
        {
            var got = ReadOutput(output, name);
            Assert.Equal(9 * Hidden, got.Length);
            for (var i = 0; i < got.Length; i++)
            {
                var b = _weights["base"][name][i];
                var expected = b + (0.7f * (_weights["chatml"][name][i] - b)) + (0.5f * (_weights["tools"][name][i] - b));
                Assert.Equal(expected, got[i], 5);
            }
        }
        Assert.Equal(9, Config(output)["vocab_size"]!.GetValue<int>());
        Assert.Equal(File.ReadAllText(Path.Combine(_base, "tokenizer.json")), File.ReadAllText(Path.Combine(output, "tokenizer.json")));
    }

    [Theory]
    [InlineData("base")]
    [InlineData("union")]
    [InlineData("tools")]
    public async Task Each_tokenizer_source_gives_mergekits_vocabulary_and_rows(string source)
    {
        var config = TaskArithmetic($"tokenizer_source: {(source == "tools" ? _tools : source)}\n");
        var output = await Merge("source-" + source, config);
        var reference = Reference(new JsonObject
        {
            ["source"] = source,
            ["method"] = "task_arithmetic",
            ["base"] = "base",
        });
        AssertMatches(output, reference);
        var vocab = Vocabulary(output);
        switch (source)
        {
            case "base":
                Assert.Equal(9, vocab.Count);
                Assert.DoesNotContain("<extra>", vocab.Keys); // beyond the base's vocab_size: stripped
                break;
            case "union":
                // The base's 9, then the ordinary token only tools has, then the added tokens in model order.
                Assert.Equal([("cd", 9), ("<|im_start|>", 10), ("<|im_end|>", 11), ("<tool>", 12)],
                    vocab.Where(v => v.Value >= 9).OrderBy(v => v.Value).Select(v => (v.Key, v.Value)));
                break;
            default:
                Assert.Equal(11, vocab.Count);
                Assert.Equal(10, vocab["<tool>"]);
                break;
        }
        Assert.Equal(vocab.Count, Config(output)["vocab_size"]!.GetValue<int>());
    }

    [Fact]
    public async Task In_bfloat16_the_permuted_rows_are_mergekits_bit_for_bit()
    {
        // Weights 0 leave the (permuted) base, so the output is its rows exactly: its own, donors' (cast from float32 to
        // bfloat16) and, for <|im_start|>, which it lacks, the mean of chatml's and tools' cast rows computed in bfloat16.
        // (With two rows, rounding the sum and then halving equals rounding once, so the rounding order of a mean over
        // three or more rows is not exercised here.)
        var config = $"merge_method: task_arithmetic\nbase_model: {_base}\nmodels:\n  - model: {_chatml}\n    parameters: {{weight: 0.0}}\n  - model: {_tools}\n    parameters: {{weight: 0.0}}\ndtype: bfloat16\ntokenizer_source: union\n";
        var output = await Merge("bf16", config);
        var reference = Reference(new JsonObject { ["source"] = "union", ["method"] = "task_arithmetic", ["base"] = "base", ["dtype"] = "bfloat16", ["zero_weights"] = true });
        foreach (var name in Embeddings)
        {
            var got = ReadOutput(output, name, SafeTensorsDType.BF16);
            var rows = reference["rows"]![name]!.AsArray();
            Assert.Equal(rows.Count * Hidden, got.Length);
            for (var r = 0; r < rows.Count; r++)
            {
                for (var c = 0; c < Hidden; c++)
                {
                    Assert.Equal((float)rows[r]![c]!.GetValue<double>(), got[(r * Hidden) + c]);
                }
            }
        }
    }

    [Fact]
    public async Task The_tokenizer_block_sets_token_sources_force_and_padding_and_a_named_chat_template()
    {
        var block = """
            tokenizer:
              source: union
              tokens:
                "<|im_start|>":
                  source:
                    kind: zero
                "<new>":
                  source:
                    kind: model_token
                    model: {tools}
                    token: "<tool>"
                ab:
                  source: {tools}
                  force: true
              pad_to_multiple_of: 8
            chat_template: chatml
            """.Replace("{tools}", _tools, StringComparison.Ordinal);
        var linear = $"merge_method: linear\nmodels:\n  - model: {_base}\n    parameters: {{weight: 0.2}}\n  - model: {_chatml}\n    parameters: {{weight: 0.5}}\n  - model: {_tools}\n    parameters: {{weight: 0.3}}\ndtype: float32\n" + block + "\n";
        var output = await Merge("block", linear);
        var reference = Reference(new JsonObject
        {
            ["source"] = "union",
            ["method"] = "linear",
            ["base"] = null,
            ["pad_to_multiple_of"] = 8,
            ["tokens"] = new JsonObject
            {
                ["<|im_start|>"] = new JsonObject { ["source"] = new JsonObject { ["kind"] = "zero" } },
                ["<new>"] = new JsonObject { ["source"] = new JsonObject { ["kind"] = "model_token", ["model"] = "tools", ["token"] = "<tool>" } },
                ["ab"] = new JsonObject { ["source"] = "tools", ["force"] = true },
            },
        });
        AssertMatches(output, reference);
        var vocab = Vocabulary(output);
        Assert.Equal(14, vocab.Count);
        Assert.Equal(13, vocab["<new>"]);
        Assert.Equal(16, Config(output)["vocab_size"]!.GetValue<int>());
        Assert.Equal(16 * Hidden, ReadOutput(output, "lm_head.weight").Length);
        var tokenizerConfig = JsonNode.Parse(File.ReadAllText(Path.Combine(output, "tokenizer_config.json")))!;
        Assert.Contains("<|im_start|>", tokenizerConfig["chat_template"]!.GetValue<string>(), StringComparison.Ordinal);
        Assert.Equal("<tool>", tokenizerConfig["added_tokens_decoder"]!["12"]!["content"]!.GetValue<string>());
        Assert.True(tokenizerConfig["added_tokens_decoder"]!["12"]!["special"]!.GetValue<bool>());
        Assert.False(tokenizerConfig["added_tokens_decoder"]!["13"]!["special"]!.GetValue<bool>());
    }

    [Fact]
    public async Task A_frankenmerge_permutes_the_embeddings_of_the_slice_they_come_from()
    {
        // mergekit plans the embeddings from the first slice's sources and lm_head from the last's: each is permuted over
        // those inputs only, so a token the one source lacks has no donor there and gets a zero row.
        var output = await Merge("franken", $$"""
            slices:
              - sources:
                  - model: {{_chatml}}
                    layer_range: [0, 1]
              - sources:
                  - model: {{_tools}}
                    layer_range: [0, 1]
            merge_method: passthrough
            tokenizer_source: union
            dtype: float32
            """);
        var vocab = Vocabulary(output);
        Assert.Equal(13, vocab.Count);
        Assert.Equal(2, Config(output)["num_hidden_layers"]!.GetValue<int>());
        foreach (var (tensor, model) in new[] { ("model.embed_tokens.weight", "chatml"), ("lm_head.weight", "tools") })
        {
            var own = JsonNode.Parse(File.ReadAllText(Path.Combine(_root, model, "tokenizer.json")))!;
            var ownVocab = own["model"]!["vocab"]!.AsObject().ToDictionary(v => v.Key, v => v.Value!.GetValue<int>());
            foreach (var token in own["added_tokens"]!.AsArray())
            {
                ownVocab[token!["content"]!.GetValue<string>()] = token["id"]!.GetValue<int>();
            }
            var got = ReadOutput(output, tensor);
            foreach (var (token, id) in vocab)
            {
                for (var c = 0; c < Hidden; c++)
                {
                    var expected = ownVocab.TryGetValue(token, out var row) ? _weights[model][tensor][(row * Hidden) + c] : 0f;
                    Assert.Equal(expected, got[(id * Hidden) + c]);
                }
            }
        }
    }

    [Fact]
    public async Task A_tokenizer_source_outside_the_merge_is_resolved_and_used()
    {
        // The tools model's tokenizer, from a folder that is not merged (base and chatml are): "cd" and "<tool>" are in
        // neither merged model, so their rows are zero.
        var outside = Path.Combine(_root, "outside");
        Directory.CreateDirectory(outside);
        File.Copy(Path.Combine(_tools, "tokenizer.json"), Path.Combine(outside, "tokenizer.json"));
        File.Copy(Path.Combine(_tools, "config.json"), Path.Combine(outside, "config.json"));
        var output = await Merge("outside", $"merge_method: task_arithmetic\nbase_model: {_base}\nmodels:\n  - model: {_chatml}\n    parameters: {{weight: 0.7}}\ndtype: float32\ntokenizer_source: {outside}\n");
        var vocab = Vocabulary(output);
        Assert.Equal(11, vocab.Count);
        var got = ReadOutput(output, "model.embed_tokens.weight");
        Assert.All(Enumerable.Range(0, Hidden), c => Assert.Equal(0f, got[(vocab["<tool>"] * Hidden) + c]));
        // <|im_start|>: only chatml has it (id 9 there), so the base takes chatml's row and the delta is zero.
        Assert.All(Enumerable.Range(0, Hidden), c => Assert.Equal(_weights["chatml"]["model.embed_tokens.weight"][(9 * Hidden) + c], got[(vocab["<|im_start|>"] * Hidden) + c]));
    }

    [Fact]
    public async Task A_chat_template_string_or_auto_lands_in_tokenizer_config()
    {
        const string Template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}";
        var output = await Merge("template", TaskArithmetic($"chat_template: \"{Template.Replace("\n", "\\n", StringComparison.Ordinal)}\"\n"));
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(output, "tokenizer_config.json")))!;
        Assert.Equal(Template, config["chat_template"]!.GetValue<string>());

        // auto: the template most inputs carry (chatml's and tools' here; the base has none).
        foreach (var (folder, template) in new[] { (_chatml, "{{ 'most common template' }}"), (_tools, "{{ 'most common template' }}") })
        {
            File.WriteAllText(Path.Combine(folder, "tokenizer_config.json"), new JsonObject { ["chat_template"] = template }.ToJsonString());
        }
        output = await Merge("auto", TaskArithmetic("chat_template: auto\n"));
        config = JsonNode.Parse(File.ReadAllText(Path.Combine(output, "tokenizer_config.json")))!;
        Assert.Equal("{{ 'most common template' }}", config["chat_template"]!.GetValue<string>());
    }

    [Fact]
    public async Task Bad_tokenizer_input_fails_naming_the_problem()
    {
        var (exit, _, stderr) = await Run("missing-token", TaskArithmetic($"tokenizer:\n  source: base\n  tokens:\n    \"<tool>\":\n      source: {_chatml}\n"));
        Assert.NotEqual(0, exit);
        Assert.Contains($"token '<tool>': its source model '{_chatml}' does not have it", stderr, StringComparison.Ordinal);

        (exit, _, stderr) = await Run("kind", TaskArithmetic("tokenizer:\n  tokens:\n    x:\n      source: {kind: random}\n"));
        Assert.NotEqual(0, exit);
        Assert.Contains("token 'x': unknown source kind 'random'", stderr, StringComparison.Ordinal);

        (exit, _, stderr) = await Run("template", TaskArithmetic("chat_template: vicuna\n"));
        Assert.NotEqual(0, exit);
        Assert.Contains("chat_template 'vicuna' is neither a built-in template (alpaca, chatml, exaone, llama3, mistral)", stderr, StringComparison.Ordinal);

        File.WriteAllText(Path.Combine(_tools, "tokenizer.json"), "{\"model\": {\"type\": \"BPE\", \"vocab\": [1, 2]}}");
        (exit, _, stderr) = await Run("malformed", TaskArithmetic("tokenizer_source: union\n"));
        Assert.NotEqual(0, exit);
        Assert.Contains($"{Path.Combine(_tools, "tokenizer.json")}: model type 'BPE' with this vocabulary layout is not supported", stderr, StringComparison.Ordinal);
        Assert.False(Directory.Exists(Path.Combine(_root, "out-malformed")));
    }

    private string TaskArithmetic(string extra) =>
        $"merge_method: task_arithmetic\nbase_model: {_base}\nmodels:\n  - model: {_chatml}\n    parameters: {{weight: 0.7}}\n  - model: {_tools}\n    parameters: {{weight: 0.5}}\ndtype: float32\n{extra}";

    private async Task<(int Exit, string StdOut, string StdErr)> Run(string name, string yaml)
    {
        var config = Path.Combine(_root, name + ".yml");
        await File.WriteAllTextAsync(config, yaml);
        return await Processes.SensMergeAsync("merge", config, "--out", Path.Combine(_root, "out-" + name), "--plugins", _plugins,
            "--registry", Path.Combine(_root, "registry", "merges.db"));
    }

    private async Task<string> Merge(string name, string yaml)
    {
        var (exit, stdout, stderr) = await Run(name, yaml);
        Assert.True(exit == 0, stderr + stdout);
        return Path.Combine(_root, "out-" + name);
    }

    /// <summary>Runs the reference on the three models (base first, then chatml and tools, as the configs list them).</summary>
    private JsonNode Reference(JsonObject spec)
    {
        spec["models"] = new JsonArray(
            new JsonObject { ["name"] = "base", ["folder"] = _base, ["vocab_size"] = 9 },
            new JsonObject { ["name"] = "chatml", ["folder"] = _chatml, ["vocab_size"] = 11 },
            new JsonObject { ["name"] = "tools", ["folder"] = _tools, ["vocab_size"] = 12 });
        spec["weights"] = spec["method"]!.GetValue<string>() == "linear"
            ? new JsonObject { ["base"] = 0.2, ["chatml"] = 0.5, ["tools"] = 0.3 }
            : new JsonObject { ["chatml"] = 0.7, ["tools"] = 0.5 };
        spec["dtype"] ??= "float32";
        if (spec["zero_weights"] is not null)
        {
            spec["weights"] = new JsonObject { ["chatml"] = 0.0, ["tools"] = 0.0 };
        }
        spec["tensors"] = new JsonArray([.. Embeddings.Select(e => (JsonNode)e)]);
        if (spec["tokens"] is JsonObject tokens)
        {
            foreach (var (_, entry) in tokens)
            {
                if (entry!["source"] is JsonObject { } s && s["model"] is not null)
                {
                    s["model"] = "tools";
                }
            }
        }
        var specPath = Path.Combine(_root, $"spec-{Guid.NewGuid():N}.json");
        File.WriteAllText(specPath, spec.ToJsonString());
        var script = Path.Combine(AppContext.BaseDirectory, "Merging", "Reference", "vocab_reference.py");
        var (exit, stdout, stderr) = Processes.RunAsync(Python, [script, specPath]).GetAwaiter().GetResult();
        Assert.True(exit == 0, stderr + stdout);
        return JsonNode.Parse(stdout)!;
    }

    /// <summary>The output's vocabulary, added-token flags and embedding rows equal the reference's.</summary>
    private static void AssertMatches(string output, JsonNode reference)
    {
        var vocab = Vocabulary(output);
        var expectedVocab = reference["vocab"]!.AsObject().ToDictionary(v => v.Key, v => v.Value!.GetValue<int>());
        Assert.Equal(expectedVocab.OrderBy(v => v.Value), vocab.OrderBy(v => v.Value));
        var added = JsonNode.Parse(File.ReadAllText(Path.Combine(output, "tokenizer.json")))!["added_tokens"]!.AsArray();
        Assert.Equal(reference["added"]!.AsObject().Count, added.Count);
        foreach (var token in added)
        {
            var expected = reference["added"]![token!["id"]!.GetValue<int>().ToString(System.Globalization.CultureInfo.InvariantCulture)]!;
            foreach (var flag in new[] { "content", "special", "normalized" })
            {
                Assert.Equal(expected[flag]!.ToJsonString(), token[flag]!.ToJsonString());
            }
        }
        foreach (var name in Embeddings)
        {
            var got = ReadOutput(output, name);
            var rows = reference["rows"]![name]!.AsArray();
            Assert.Equal(rows.Count * Hidden, got.Length);
            for (var r = 0; r < rows.Count; r++)
            {
                for (var c = 0; c < Hidden; c++)
                {
                    var expected = rows[r]![c]!.GetValue<double>();
                    Assert.True(Math.Abs(expected - got[(r * Hidden) + c]) <= 1e-5 * Math.Max(1, Math.Abs(expected)),
                        $"{name} row {r} column {c}: {got[(r * Hidden) + c]}, reference {expected}");
                }
            }
        }
    }

    private static Dictionary<string, int> Vocabulary(string output)
    {
        var root = JsonNode.Parse(File.ReadAllText(Path.Combine(output, "tokenizer.json")))!;
        var vocab = root["model"]!["vocab"]!.AsObject().ToDictionary(v => v.Key, v => v.Value!.GetValue<int>());
        foreach (var token in root["added_tokens"]!.AsArray())
        {
            vocab[token!["content"]!.GetValue<string>()] = token["id"]!.GetValue<int>();
        }
        return vocab;
    }

    private static JsonObject Config(string output) => JsonNode.Parse(File.ReadAllText(Path.Combine(output, "config.json")))!.AsObject();

    private static float[] ReadOutput(string folder, string name, SafeTensorsDType? dtype = null)
    {
        using var file = SafeTensorsFile.Open(Path.Combine(folder, "model.safetensors"));
        var info = file.Tensors.Single(t => t.Name == name);
        Assert.Equal(dtype ?? SafeTensorsDType.F32, info.DType);
        var bytes = new byte[info.ByteLength];
        file.ReadBytes(info, bytes);
        return info.DType == SafeTensorsDType.BF16
            ? [.. MemoryMarshal.Cast<byte, ushort>(bytes).ToArray().Select(b => BitConverter.Int32BitsToSingle(b << 16))]
            : MemoryMarshal.Cast<byte, float>(bytes).ToArray();
    }

    /// <summary>
    /// A one-block Llama-layout model with a BPE tokenizer: <paramref name="vocab"/> in id order, then
    /// <paramref name="added"/> tokens (special; those not in the vocabulary get the next ids), config.json's
    /// <paramref name="vocabSize"/> and <paramref name="rows"/> embedding rows.
    /// </summary>
    private string WriteModel(string name, int seed, string[] vocab, string[] added, string[] merges, int vocabSize, int rows)
    {
        var folder = Path.Combine(_root, name);
        Directory.CreateDirectory(folder);
        var modelVocab = new JsonObject();
        for (var i = 0; i < vocab.Length; i++)
        {
            modelVocab[vocab[i]] = i;
        }
        var addedTokens = new JsonArray();
        var next = vocab.Length;
        foreach (var token in added)
        {
            var id = Array.IndexOf(vocab, token) is >= 0 and var at ? at : next++;
            addedTokens.Add(new JsonObject
            {
                ["id"] = id, ["content"] = token, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false, ["normalized"] = false, ["special"] = true,
            });
        }
        var tokenizer = new JsonObject
        {
            ["version"] = "1.0",
            ["added_tokens"] = addedTokens,
            ["normalizer"] = null,
            ["pre_tokenizer"] = new JsonObject { ["type"] = "Whitespace" },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE",
                ["unk_token"] = "<unk>",
                ["vocab"] = modelVocab,
                ["merges"] = new JsonArray([.. merges.Select(m => (JsonNode)m)]),
            },
        };
        File.WriteAllText(Path.Combine(folder, "tokenizer.json"), tokenizer.ToJsonString());
        File.WriteAllText(Path.Combine(folder, "config.json"), new JsonObject
        {
            ["model_type"] = "llama",
            ["architectures"] = new JsonArray("LlamaForCausalLM"),
            ["hidden_size"] = Hidden,
            ["num_hidden_layers"] = 1,
            ["vocab_size"] = vocabSize,
            ["torch_dtype"] = "float32",
        }.ToJsonString());
        (string Name, long[] Shape)[] tensors =
        [
            ("model.embed_tokens.weight", [rows, Hidden]),
            ("model.layers.0.mlp.up_proj.weight", [Hidden, Hidden]),
            ("model.norm.weight", [Hidden]),
            ("lm_head.weight", [rows, Hidden]),
        ];
        var random = new Random(seed);
        var values = new Dictionary<string, float[]>();
        var plan = tensors.Select(t => new TensorPlanEntry(t.Name, SafeTensorsDType.F32, t.Shape)).ToList();
        using (var writer = new SafeTensorsWriter(Path.Combine(folder, "model.safetensors"), plan))
        {
            foreach (var (tensor, shape) in tensors)
            {
                var data = Enumerable.Range(0, (int)TensorShape.ElementCount(shape)).Select(_ => (float)((random.NextDouble() * 2) - 1)).ToArray();
                values[tensor] = data;
                writer.WriteTensor(tensor, MemoryMarshal.AsBytes(data.AsSpan()));
            }
            writer.Complete();
        }
        _weights[name] = values;
        return folder;
    }
}
