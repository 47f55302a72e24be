using System.Text.Json.Nodes;
using SensMerging.Abstractions;
using SensMerging.Runtime.Model;
using SensMerging.Scorers;
using Microsoft.Extensions.Logging.Abstractions;
using static TorchSharp.torch;

namespace SensMerging.Runtime.Tests;

/// <summary>
/// Each supported architecture, built as a tiny random model from its real config.json keys and Hugging Face tensor
/// names by an independent float64 PyTorch implementation (Reference/decoder_reference.py), gives the reference's logits
/// and sensitivity scores (per layer group, mean over samples of sum |theta x dL/dtheta|) to 1e-4 relative.
/// </summary>
public sealed class ArchitectureReferenceTests : IDisposable
{
    private const double Relative = 1e-4;

    private static readonly string[] Texts =
    [
        "<s> a b c d e f g h i j k l",
        "<s> m n o p q r s t u v w",
        "<s> x y z 0 1 a c e g i k m o",
    ];

    private readonly TempFolder _temp = new();

    public void Dispose() => _temp.Dispose();

    /// <summary>The config.json of each case: the architecture's own keys, tiny sizes.</summary>
    public static TheoryData<string, string, string> Cases() => new()
    {
        // Llama 3.1-style rope scaling; original_max_position_embeddings small enough that all three frequency bands occur.
        { "llama3", "F32", """
            {"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":32,"intermediate_size":48,"num_hidden_layers":2,
             "num_attention_heads":4,"num_key_value_heads":2,"head_dim":8,"hidden_act":"silu","rms_norm_eps":1e-5,"rope_theta":10000.0,
             "max_position_embeddings":128,"vocab_size":32,"tie_word_embeddings":false,"attention_bias":false,"mlp_bias":false,
             "rope_scaling":{"factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":64,"rope_type":"llama3"},
             "torch_dtype":"bfloat16"}
            """ },
        { "llama-linear", "F32", """
            {"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":32,"intermediate_size":48,"num_hidden_layers":2,
             "num_attention_heads":4,"num_key_value_heads":4,"hidden_act":"silu","rms_norm_eps":1e-6,"rope_theta":10000.0,
             "max_position_embeddings":64,"vocab_size":32,"tie_word_embeddings":true,"rope_scaling":{"type":"linear","factor":4.0}}
            """ },
        // Mistral: the sequences (12-16 tokens) exceed the window.
        { "mistral", "BF16", """
            {"architectures":["MistralForCausalLM"],"model_type":"mistral","hidden_size":32,"intermediate_size":48,"num_hidden_layers":2,
             "num_attention_heads":4,"num_key_value_heads":2,"head_dim":null,"hidden_act":"silu","rms_norm_eps":1e-5,"rope_theta":1000000.0,
             "max_position_embeddings":64,"vocab_size":32,"tie_word_embeddings":false,"sliding_window":5,"torch_dtype":"bfloat16"}
            """ },
        // Qwen2.5-0.5B-style: q/k/v bias, tied head, use_sliding_window false (its sliding_window is then ignored), BF16.
        { "qwen2", "BF16", """
            {"architectures":["Qwen2ForCausalLM"],"model_type":"qwen2","hidden_size":32,"intermediate_size":48,"num_hidden_layers":2,
             "num_attention_heads":4,"num_key_value_heads":2,"hidden_act":"silu","rms_norm_eps":1e-6,"rope_theta":1000000.0,
             "max_position_embeddings":32768,"max_window_layers":21,"sliding_window":3,"use_sliding_window":false,
             "tie_word_embeddings":true,"vocab_size":32,"rope_scaling":null,"torch_dtype":"bfloat16"}
            """ },
        // Qwen2 with its sliding window switched on: layers from max_window_layers (1) on slide.
        { "qwen2-sliding", "F32", """
            {"architectures":["Qwen2ForCausalLM"],"model_type":"qwen2","hidden_size":32,"intermediate_size":48,"num_hidden_layers":3,
             "num_attention_heads":4,"num_key_value_heads":2,"hidden_act":"silu","rms_norm_eps":1e-6,"rope_theta":10000.0,
             "max_position_embeddings":64,"max_window_layers":1,"sliding_window":4,"use_sliding_window":true,
             "tie_word_embeddings":false,"vocab_size":32}
            """ },
        // Qwen3: head_dim (16) is not hidden/heads (8); per-head q/k RMSNorms.
        { "qwen3", "BF16", """
            {"architectures":["Qwen3ForCausalLM"],"model_type":"qwen3","hidden_size":32,"intermediate_size":48,"num_hidden_layers":2,
             "num_attention_heads":4,"num_key_value_heads":2,"head_dim":16,"hidden_act":"silu","rms_norm_eps":1e-6,"rope_theta":1000000.0,
             "max_position_embeddings":40960,"attention_bias":false,"use_sliding_window":false,"sliding_window":null,"max_window_layers":28,
             "tie_word_embeddings":false,"vocab_size":32,"rope_scaling":null,"torch_dtype":"bfloat16"}
            """ },
        // Gemma 2: scaled embeddings, (1 + w) norms, GeGLU, sandwich norms, query_pre_attn_scalar, both soft-caps (small, so
        // they bite), alternating sliding (layers 0, 2) and full layers, tied head.
        { "gemma2", "BF16", """
            {"architectures":["Gemma2ForCausalLM"],"model_type":"gemma2","hidden_size":32,"intermediate_size":48,"num_hidden_layers":3,
             "num_attention_heads":4,"num_key_value_heads":2,"head_dim":8,"hidden_act":"gelu_pytorch_tanh","hidden_activation":"gelu_pytorch_tanh",
             "rms_norm_eps":1e-6,"rope_theta":10000.0,"max_position_embeddings":8192,"query_pre_attn_scalar":12,
             "attn_logit_softcapping":3.0,"final_logit_softcapping":5.0,"sliding_window":4,"attention_bias":false,
             "cache_implementation":"hybrid","vocab_size":32,"torch_dtype":"bfloat16"}
            """ },
        // Phi-3: fused qkv_proj and gate_up_proj, sliding window.
        { "phi3", "F32", """
            {"architectures":["Phi3ForCausalLM"],"model_type":"phi3","hidden_size":32,"intermediate_size":48,"num_hidden_layers":2,
             "num_attention_heads":4,"num_key_value_heads":2,"hidden_act":"silu","rms_norm_eps":1e-5,"rope_theta":10000.0,
             "max_position_embeddings":4096,"original_max_position_embeddings":4096,"sliding_window":6,"rope_scaling":null,
             "resid_pdrop":0.0,"embd_pdrop":0.0,"attention_dropout":0.0,"tie_word_embeddings":false,"vocab_size":32,"torch_dtype":"bfloat16"}
            """ },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task Logits_and_sensitivity_scores_match_the_float64_reference(string name, string dtype, string configJson)
    {
        var configPath = Path.Combine(_temp.Path, name + ".config.json");
        var dir = await ReferencePython.MakeModelAsync(_temp.Sub(name), configPath, configJson, 11, dtype);

        // The runtime's logits, one sample at a time.
        var samples = new JsonArray();
        var runtimeLogits = new List<float[]>();
        using (var model = new LlamaRuntime().LoadLlama(dir, new ModelLoadOptions(), CancellationToken.None))
        {
            Assert.Equal(JsonNode.Parse(configJson)!["model_type"]!.GetValue<string>(), model.Config.ModelType);
            foreach (var text in Texts)
            {
                var sample = model.Tokenizer.Encode(new TextSample(text), 64);
                samples.Add(new JsonObject
                {
                    ["ids"] = new JsonArray(sample.Ids.Select(i => (JsonNode)JsonValue.Create(i)).ToArray()),
                    ["mask"] = new JsonArray(sample.LossMask.Select(m => (JsonNode)JsonValue.Create(m)).ToArray()),
                });
                using var ids = tensor(sample.Ids, [1, sample.Length], ScalarType.Int64);
                using var logits = model.Forward(ids);
                runtimeLogits.Add(logits.data<float>().ToArray());
            }
        }
        var inputPath = Path.Combine(_temp.Path, name + ".input.json");
        await File.WriteAllTextAsync(inputPath, new JsonObject { ["samples"] = samples }.ToJsonString());
        var reference = JsonNode.Parse(ReferencePython.Run("run", dir, inputPath))!;

        for (var s = 0; s < Texts.Length; s++)
        {
            var expected = reference["logits"]![s]!.AsArray().Select(v => v!.GetValue<double>()).ToArray();
            Assert.Equal(expected.Length, runtimeLogits[s].Length);
            var scale = expected.Max(Math.Abs);
            Assert.True(scale > 0.5, $"{name}: reference logits too small to be a meaningful check ({scale})");
            var worst = expected.Select((e, i) => Math.Abs(runtimeLogits[s][i] - e)).Max();
            Assert.True(worst <= Relative * scale, $"{name} sample {s}: logits differ by {worst:E3} (scale {scale:F3})");
        }

        // The sensitivity scorer on the same samples, through the runtime.
        var scorer = new SensitivityScorer();
        var context = new ScoringContext
        {
            Models = [new ScoredModel(name, dir, new TextDataset(name, "/calibration/" + name + ".jsonl", Texts.Select(t => new TextSample(t)).ToArray(), 64))],
            Runtime = new LlamaRuntime(),
            Parameters = new ResolvedParameters(new Dictionary<string, object> { [SensMerging.Scorers.Calibration.Samples] = (long)Texts.Length, [SensMerging.Scorers.Calibration.MaxLength] = 64L }, []),
            Logger = NullLogger.Instance,
        };
        var table = await scorer.ScoreAsync(context, CancellationToken.None);
        var scores = reference["scores"]!.AsObject();
        Assert.Equal(scores.Select(p => p.Key).Order(StringComparer.Ordinal), table.Columns.Order(StringComparer.Ordinal));
        for (var g = 0; g < table.Columns.Count; g++)
        {
            var expected = scores[table.Columns[g]]!.GetValue<double>();
            var actual = table.Values[0][g];
            Assert.True(expected > 0, $"{name}: reference score of {table.Columns[g]} is {expected}");
            Assert.True(Math.Abs(actual - expected) <= Relative * expected,
                $"{name} {table.Columns[g]}: scorer {actual:G9} vs reference {expected:G9} (relative {Math.Abs(actual - expected) / expected:E2})");
        }
    }

    [Theory]
    [InlineData("""{"model_type":"gpt_neox"}""", "model_type 'gpt_neox'")]
    [InlineData("""{"model_type":"llama","architectures":["LlamaForSequenceClassification"]}""", "architecture 'LlamaForSequenceClassification'")]
    [InlineData("""{"model_type":"llama","rope_scaling":{"rope_type":"dynamic","factor":2.0}}""", "rope_scaling type 'dynamic'")]
    [InlineData("""{"model_type":"llama","rope_scaling":{"rope_type":"yarn","factor":4.0}}""", "rope_scaling type 'yarn'")]
    [InlineData("""{"model_type":"phi3","rope_scaling":{"type":"longrope","short_factor":[1],"long_factor":[1]}}""", "rope_scaling type 'longrope'")]
    [InlineData("""{"model_type":"phi3","rope_scaling":{"type":"su","short_factor":[1],"long_factor":[1]}}""", "rope_scaling type 'su'")]
    [InlineData("""{"model_type":"phi3","partial_rotary_factor":0.75}""", "partial_rotary_factor 0.75")]
    [InlineData("""{"model_type":"llama","rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0}}""", "no high_freq_factor")]
    [InlineData("""{"model_type":"gemma2","hidden_activation":"gelu"}""", "hidden_activation 'gelu'")]
    [InlineData("""{"model_type":"qwen2","hidden_act":"relu"}""", "hidden_act 'relu'")]
    [InlineData("""{"model_type":"qwen3","layer_types":["full_attention","chunked_attention"]}""", "layer_types entry 'chunked_attention'")]
    [InlineData("""{"model_type":"gemma2","layer_types":["full_attention"]}""", "layer_types has 1 entries for 2 layers")]
    public void Unsupported_settings_are_refused_by_name(string overrides, string named)
    {
        var config = JsonNode.Parse("""
            {"hidden_size":32,"intermediate_size":48,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"head_dim":8,"vocab_size":32}
            """)!.AsObject();
        foreach (var (key, value) in JsonNode.Parse(overrides)!.AsObject())
        {
            config[key] = value?.DeepClone();
        }
        var error = Assert.Throws<InvalidDataException>(() => LlamaConfig.Parse(config));
        Assert.Contains(named, error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Published_defaults_apply_to_keys_a_config_omits()
    {
        var baseKeys = """{"hidden_size":32,"intermediate_size":48,"num_hidden_layers":4,"num_attention_heads":4,"vocab_size":32,"model_type":""";
        var gemma = LlamaConfig.Parse(JsonNode.Parse(baseKeys + "\"gemma2\"}")!.AsObject());
        Assert.Equal((256, true, 256.0, 50.0, 30.0, 4096), (gemma.HeadDim, gemma.TieWordEmbeddings, gemma.QueryPreAttnScalar, gemma.AttnLogitSoftcapping, gemma.FinalLogitSoftcapping, gemma.SlidingWindow));
        Assert.Equal([4096, null, 4096, null], Enumerable.Range(0, 4).Select(gemma.WindowOf));
        var qwen3 = LlamaConfig.Parse(JsonNode.Parse(baseKeys + "\"qwen3\"}")!.AsObject());
        Assert.Equal((128, false, true), (qwen3.HeadDim, qwen3.TieWordEmbeddings, qwen3.QkNorm));
        Assert.All(Enumerable.Range(0, 4), l => Assert.Null(qwen3.WindowOf(l)));
        var qwen2 = LlamaConfig.Parse(JsonNode.Parse(baseKeys + "\"qwen2\",\"use_sliding_window\":true,\"sliding_window\":16,\"max_window_layers\":2}")!.AsObject());
        Assert.Equal([null, null, 16, 16], Enumerable.Range(0, 4).Select(qwen2.WindowOf));
        Assert.True(qwen2.QkvBias && !qwen2.AttentionBias);
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Configs_round_trip_through_config_json(string name, string dtype, string configJson)
    {
        _ = dtype;
        var parsed = LlamaConfig.Parse(JsonNode.Parse(configJson)!.AsObject());
        var again = LlamaConfig.Parse(JsonNode.Parse(parsed.ToJson())!.AsObject());
        Assert.True(parsed.ToJson() == again.ToJson(), name);
        Assert.Equal(Enumerable.Range(0, parsed.NumHiddenLayers).Select(parsed.WindowOf), Enumerable.Range(0, again.NumHiddenLayers).Select(again.WindowOf));
        Assert.Equal(parsed.RopeScaling, again.RopeScaling);
    }
}
