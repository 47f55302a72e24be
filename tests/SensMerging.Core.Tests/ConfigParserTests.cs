using SensMerging.Core.Config;

namespace SensMerging.Core.Tests;

public sealed class ConfigParserTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("smcfg-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private MergeConfig Parse(string yaml) => MergeConfigParser.Parse(yaml, "test.yaml", _dir);

    [Fact]
    public void Task_arithmetic_with_local_folders()
    {
        Directory.CreateDirectory(Path.Combine(_dir, "models", "math"));
        var config = Parse("""
            models:
              - model: ./models/math
                parameters:
                  weight: 0.7
              - model: models/code
                parameters:
                  weight: 0.3
            merge_method: task_arithmetic
            base_model: /opt/models/base
            parameters:
              lambda: 0.8
              normalize: true
            dtype: bfloat16
            out_dtype: float16
            """);
        Assert.Equal("task_arithmetic", config.MergeMethod);
        Assert.Equal(Path.Combine(_dir, "models", "math"), config.Models[0].Model.LocalPath);
        Assert.Equal("models/code", config.Models[1].Model.Repo); // no such folder: read as a Hub repository org/name
        Assert.Equal("/opt/models/base", config.BaseModel!.LocalPath);
        Assert.Equal(0.7, ((ScalarParameter)config.Models[0].Parameters["weight"]).Value);
        Assert.Equal(0.8, ((ScalarParameter)config.Parameters["lambda"]).Value);
        Assert.Equal(true, ((ScalarParameter)config.Parameters["normalize"]).Value);
        Assert.Equal("bfloat16", config.Dtype);
        Assert.Equal("float16", config.OutDtype);

        var resolver = ParameterResolver.For(config, SpecOnlyStrategy.For("task_arithmetic"));
        Assert.Equal([0.7, 0.3], resolver.Weights("model.layers.0.mlp.up_proj.weight", 2));
        var resolved = resolver.Resolve("model.norm.weight", 2);
        Assert.Equal(0.8, resolved.Float("lambda"));
        Assert.True(resolved.Boolean("normalize"));
        Assert.False(resolved.Boolean("int8_mask"));
    }

    [Fact]
    public void Ties_readme_example_with_gradients_filters_and_hub_references()
    {
        var config = Parse("""
            models:
              - model: psmathur/orca_mini_v3_13b
                parameters:
                  density: [1, 0.7, 0.1] # density gradient
                  weight: 1.0
              - model: garage-bAInd/Platypus2-13B
                parameters:
                  density: 0.5
                  weight: [0, 0.3, 0.7, 1] # weight gradient
              - model: WizardLM/WizardMath-13B-V1.0@a1b2c3
                parameters:
                  density: 0.33
                  weight:
                    - filter: mlp
                      value: 0.5
                    - value: 0
            merge_method: ties
            base_model: TheBloke/Llama-2-13B-fp16
            parameters:
              normalize: true
              int8_mask: true
            dtype: float16
            """);
        Assert.Equal("psmathur/orca_mini_v3_13b", config.Models[0].Model.Repo);
        Assert.Null(config.Models[0].Model.Revision);
        Assert.Equal("WizardLM/WizardMath-13B-V1.0", config.Models[2].Model.Repo);
        Assert.Equal("a1b2c3", config.Models[2].Model.Revision);
        Assert.False(config.BaseModel!.IsLocal);

        var resolver = ParameterResolver.For(config, SpecOnlyStrategy.For("ties"));
        // 41 blocks: block 10 is at depth 0.25
        var p = resolver.Resolve("model.layers.10.mlp.down_proj.weight", 41);
        Assert.Equal(0.7 * 0.5 + 1 * 0.5, p.Float("density", 0), 12); // scaled 0.5 between 1 and 0.7
        Assert.Equal(0.5, p.Float("density", 1));
        Assert.True(p.Boolean("int8_mask"));
        Assert.Equal([1.0, 0.225, 0.5], resolver.Weights("model.layers.10.mlp.down_proj.weight", 41).Select(w => Math.Round(w, 12))); // 0.75 of the way from 0 to 0.3
        var attention = resolver.Weights("model.layers.10.self_attn.q_proj.weight", 41);
        Assert.Equal(0.0, attention[2]); // the filter-less entry
    }

    [Fact]
    public void Dare_ties_with_base_listed_among_models()
    {
        var config = Parse("""
            models:
              - model: mistralai/Mistral-7B-v0.1
                # no parameters necessary for base model
              - model: samir-fama/SamirGPT-v1
                parameters:
                  density: 0.53
                  weight: 0.4
              - model: abacusai/Slerp-CM-mist-dpo
                parameters:
                  density: 0.53
                  weight: 0.3
            merge_method: dare_ties
            base_model: mistralai/Mistral-7B-v0.1
            parameters:
              int8_mask: true
            dtype: bfloat16
            seed: 1234
            """);
        Assert.Equal(3, config.Models.Count);
        var resolver = ParameterResolver.For(config, SpecOnlyStrategy.For("dare_ties"));
        Assert.Equal(["samir-fama/SamirGPT-v1", "abacusai/Slerp-CM-mist-dpo"], resolver.Experts.Select(e => e.Model.Text));
        var p = resolver.Resolve("model.layers.0.mlp.up_proj.weight", 32);
        Assert.Equal(0.53, p.Float("density", 1));
        Assert.True(p.Boolean("rescale"));
        Assert.False(p.Boolean("normalize"));
        Assert.Equal(1234, config.Seed);
        Assert.Equal(3, config.ReferencedModels().Count); // base + 2 experts, base not duplicated
    }

    [Fact]
    public void Dare_linear_breadcrumbs_and_breadcrumbs_ties_parse_their_parameters()
    {
        foreach (var method in new[] { "dare_linear", "breadcrumbs", "breadcrumbs_ties" })
        {
            var gamma = method.StartsWith("breadcrumbs", StringComparison.Ordinal) ? "\n      gamma: 0.02" : string.Empty;
            var config = Parse($"""
                models:
                  - model: org/expert-a
                    parameters:
                      weight: 0.5
                      density: 0.9{gamma}
                  - model: org/expert-b
                    parameters:
                      weight: 0.5
                      density: 0.8
                merge_method: {method}
                base_model: org/base
                parameters:
                  lambda: 1.2
                dtype: float32
                """);
            var p = ParameterResolver.For(config, SpecOnlyStrategy.For(method)).Resolve("lm_head.weight", 4);
            Assert.Equal(0.9, p.Float("density", 0));
            Assert.Equal(0.8, p.Float("density", 1));
            Assert.Equal(1.2, p.Float("lambda"));
            if (gamma.Length > 0)
            {
                Assert.Equal(0.02, p.Float("gamma", 0));
                Assert.Equal(0.01, p.Float("gamma", 1)); // default
            }
        }
    }

    [Fact]
    public void Slerp_with_a_full_depth_slice_and_t_gradients()
    {
        var config = Parse("""
            slices:
              - sources:
                  - model: OpenPipe/mistral-ft-optimized-1218
                    layer_range: [0, 32]
                  - model: mlabonne/NeuralHermes-2.5-Mistral-7B
                    layer_range: [0, 32]
            merge_method: slerp
            base_model: OpenPipe/mistral-ft-optimized-1218
            parameters:
              t:
                - filter: self_attn
                  value: [0, 0.5, 0.3, 0.7, 1]
                - filter: mlp
                  value: [1, 0.5, 0.7, 0.3, 0]
                - value: 0.5
            dtype: bfloat16
            """);
        Assert.Equal(new LayerRange(0, 32), config.LayerRange);
        var strategy = SpecOnlyStrategy.For("slerp");
        var resolver = ParameterResolver.For(config, strategy);
        Assert.Equal(["mlabonne/NeuralHermes-2.5-Mistral-7B"], resolver.Experts.Select(e => e.Model.Text));
        Assert.Equal(0.0, resolver.Resolve("model.layers.0.self_attn.q_proj.weight", 32).Float("t"));
        Assert.Equal(1.0, resolver.Resolve("model.layers.31.self_attn.q_proj.weight", 32).Float("t"));
        Assert.Equal(0.0, resolver.Resolve("model.layers.31.mlp.up_proj.weight", 32).Float("t"));
        var depth = 8 / 31.0;
        var frac = depth * 4 - 1;
        Assert.Equal(0.5 * (1 - frac) + 0.3 * frac, resolver.Resolve("model.layers.8.self_attn.o_proj.weight", 32).Float("t"), 12);
        Assert.Equal(0.5 * (1 - frac) + 0.7 * frac, resolver.Resolve("model.layers.8.mlp.gate_proj.weight", 32).Float("t"), 12);
        Assert.Equal(0.5, resolver.Resolve("model.layers.8.input_layernorm.weight", 32).Float("t"));
        Assert.Equal(0.5, resolver.Resolve("model.embed_tokens.weight", 32).Float("t"));
        ParameterResolver.Validate(config, strategy, ["model.embed_tokens.weight", "model.layers.0.mlp.up_proj.weight", "lm_head.weight"], 32);

        var partial = Assert.Throws<MergeConfigException>(() => ParameterResolver.Validate(config, strategy, ["lm_head.weight"], 40));
        Assert.Contains("[0, 32]", partial.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Model_stock_and_linear()
    {
        Directory.CreateDirectory(Path.Combine(_dir, "a"));
        var stock = Parse("""
            models:
              - model: a
              - model: ./b
            merge_method: model_stock
            base_model: ./base
            dtype: bfloat16
            """);
        Assert.True(stock.Models[0].Model.IsLocal);
        var resolver = ParameterResolver.For(stock, SpecOnlyStrategy.For("model_stock"));
        Assert.Equal([1.0, 1.0], resolver.Weights("model.norm.weight", 2));

        var linear = Parse("""
            models:
              - model: psmathur/orca_mini_v3_13b
                parameters:
                  weight: 1.0
              - model: WizardLM/WizardLM-13B-V1.2
                parameters:
                  weight: 0.3
              - model: garage-bAInd/Platypus2-13B
                parameters:
                  weight: 0.5
            merge_method: linear
            dtype: float16
            """);
        var linearResolver = ParameterResolver.For(linear, SpecOnlyStrategy.For("linear"));
        Assert.Equal([1.0, 0.3, 0.5], linearResolver.Weights("model.layers.1.mlp.up_proj.weight", 2));
        Assert.True(linearResolver.Resolve("lm_head.weight", 2).Boolean("normalize"));
        Assert.Null(linear.BaseModel);
    }

    [Fact]
    public void Project_keys_decorators_calibration_seed_name_and_tokenizer()
    {
        var config = Parse("""
            name: sens-ties-demo
            merge_method: ties
            base_model: org/base
            models:
              - model: org/math
                calibration:
                  path: data/math.jsonl
                  samples: 100
                  max_length: 512
              - model: org/code
                calibration: data/code.jsonl
            decorators:
              - name: sens
                parameters:
                  temperature: 2.0
                  scorers: [sensitivity, logit_alignment]
              - clip
            tokenizer_source: org/math@v2
            seed: 7
            """);
        Assert.Equal("sens-ties-demo", config.Name);
        Assert.Equal(7, config.Seed);
        Assert.Equal(new CalibrationSource(Path.Combine(_dir, "data", "math.jsonl"), 100, 512), config.Models[0].Calibration);
        Assert.Equal(new CalibrationSource(Path.Combine(_dir, "data", "code.jsonl"), null, null), config.Models[1].Calibration);
        Assert.Equal("sens", config.Decorators[0].Name);
        // Decorators' parameters are parsed as a strategy's (contract 1.6): a value, or a list (a gradient, or a list of names).
        Assert.Equal(2.0, Assert.IsType<ScalarParameter>(config.Decorators[0].Parameters["temperature"]).Value);
        Assert.Equal(new object[] { "sensitivity", "logit_alignment" }, Assert.IsType<GradientParameter>(config.Decorators[0].Parameters["scorers"]).Values);
        Assert.Equal("clip", config.Decorators[1].Name);
        Assert.Equal(TokenizerSourceKind.Model, config.TokenizerSource!.Kind);
        Assert.Equal("v2", config.TokenizerSource.Model!.Revision);

        var baseTokenizer = Parse("merge_method: linear\nmodels:\n  - model: org/a\ntokenizer:\n  source: base\n");
        Assert.Equal(TokenizerSourceKind.Base, baseTokenizer.TokenizerSource!.Kind);
        // The tokenizer source may be a model the merge does not merge; it is resolved with the others, only its tokenizer read.
        Assert.Equal(["org/base", "org/math", "org/code", "org/math@v2"], config.ResolvedModels().Select(m => m.Text));
    }

    [Fact]
    public void The_tokenizer_block_and_chat_template_parse_as_mergekit_reads_them()
    {
        var config = Parse("""
            merge_method: linear
            models:
              - model: org/a
              - model: org/b
            tokenizer:
              tokens:
                "<|im_start|>":
                  source: org/b
                  force: true
                "<pad>":
                  source: {kind: zero}
                "<x>":
                  source: {kind: model_token, model: org/a, token: "<s>"}
                "<y>":
                  source: {kind: model_token, model: org/a, token_id: 3}
              pad_to_multiple_of: 64
            chat_template: chatml
            """);
        var tokenizer = config.Tokenizer!;
        Assert.Equal(TokenizerSourceKind.Union, tokenizer.Source.Kind); // mergekit's default for the block
        Assert.Equal(64, tokenizer.PadToMultipleOf);
        Assert.Equal((TokenEmbeddingKind.Model, "org/b", true), (tokenizer.Tokens["<|im_start|>"].Source!.Kind, tokenizer.Tokens["<|im_start|>"].Source!.Model!.Text, tokenizer.Tokens["<|im_start|>"].Force));
        Assert.Equal(TokenEmbeddingKind.Zero, tokenizer.Tokens["<pad>"].Source!.Kind);
        Assert.Equal(new TokenEmbeddingSource(TokenEmbeddingKind.ModelToken, config.Models[0].Model, "<s>"), tokenizer.Tokens["<x>"].Source);
        Assert.Equal(3L, tokenizer.Tokens["<y>"].Source!.TokenId);
        Assert.Equal("chatml", config.ChatTemplate);
        Assert.Equal(TokenizerSourceKind.Union, Parse("merge_method: linear\nmodels:\n  - model: org/a\ntokenizer_source: union\n").TokenizerSource!.Kind);

        var bad = Assert.Throws<MergeConfigException>(() => Parse("""
            merge_method: linear
            models:
              - model: org/a
            tokenizer:
              tokens:
                "<a>": {source: {kind: zero}, force: maybe}
                "<b>": {source: {kind: model_token, model: org/a}}
                "<c>": {source: org/elsewhere}
                "<d>": {sauce: org/a}
              pad_to_multiple_of: 0
            """));
        Assert.Contains("token '<a>': 'force' must be true or false", bad.Message, StringComparison.Ordinal);
        Assert.Contains("token '<b>': a model_token source needs exactly one of 'token' and 'token_id'", bad.Message, StringComparison.Ordinal);
        Assert.Contains("token '<c>': its source model 'org/elsewhere' is not one of the merge's models (org/a)", bad.Message, StringComparison.Ordinal);
        Assert.Contains("token '<d>': unknown key 'sauce' (use source, force)", bad.Message, StringComparison.Ordinal);
        Assert.Contains("'tokenizer.pad_to_multiple_of' must be a positive integer, got 0", bad.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Unsupported_keys_are_reported_by_name_and_line()
    {
        var error = Assert.Throws<MergeConfigException>(() => Parse("""
            merge_method: linear
            models:
              - model: org/a
                lora: org/adapter
            modules: {}
            frobnicate: 3
            """));
        Assert.Contains("line 4: unsupported key 'lora'", error.Message, StringComparison.Ordinal);
        Assert.Contains("line 5: unsupported key 'modules' (mergekit modules are not supported)", error.Message, StringComparison.Ordinal);
        Assert.Contains("line 6: unsupported key 'frobnicate'", error.Message, StringComparison.Ordinal);
        Assert.Equal(3, error.Problems.Count);
    }

    [Fact]
    public void Model_plus_adapter_references_name_a_model_and_its_lora_adapter()
    {
        var config = Parse("merge_method: linear\nmodels:\n  - model: org/base@v1+org/adapter@abc\n  - model: org/base@v1\n");
        var withLora = config.Models[0].Model;
        Assert.Equal(("org/base@v1+org/adapter@abc", "org/base", "v1"), (withLora.Text, withLora.Repo, withLora.Revision));
        Assert.Equal(("org/adapter@abc", "org/adapter", "abc"), (withLora.Lora!.Text, withLora.Lora.Repo, withLora.Lora.Revision));
        Assert.Equal("org/base@v1", withLora.WithoutLora().Text);
        Assert.Null(withLora.WithoutLora().Lora);
        Assert.False(withLora.SameModelAs(config.Models[1].Model));
        Assert.True(withLora.WithoutLora().SameModelAs(config.Models[1].Model));
        Assert.Equal(2, config.ReferencedModels().Count);

        using var dir = new SafeTensorsTempDir();
        Directory.CreateDirectory(dir.File("a+b"));
        var folder = ModelReference.Parse("a+b", dir.Path);
        Assert.Null(folder.Lora);
        Assert.Equal(dir.File("a+b"), folder.LocalPath);
        var local = ModelReference.Parse("./base + ../adapter", dir.Path);
        Assert.Equal((dir.File("base"), Path.GetFullPath(Path.Combine(dir.Path, "../adapter"))), (local.LocalPath, local.Lora!.LocalPath));
    }

    [Fact]
    public void Unsupported_mergekit_features_are_errors()
    {
        var lora = Assert.Throws<MergeConfigException>(() => Parse("merge_method: linear\nmodels:\n  - model: org/a+org/lora+org/more\n"));
        Assert.Contains("a LoRA reference is 'model+adapter', with one '+'", lora.Message, StringComparison.Ordinal);

        var unequal = Assert.Throws<MergeConfigException>(() => Parse("""
            slices:
              - sources:
                  - model: org/a
                    layer_range: [0, 16]
                  - model: org/b
                    layer_range: [0, 8]
            merge_method: slerp
            """));
        Assert.Contains("different numbers of layers", unequal.Message, StringComparison.Ordinal);

        var shifted = Assert.Throws<MergeConfigException>(() => Parse("""
            slices:
              - sources:
                  - model: org/a
                    layer_range: [0, 8]
                  - model: org/b
                    layer_range: [8, 16]
            merge_method: slerp
            """));
        Assert.Contains("one slice must take the same layers from every source", shifted.Message, StringComparison.Ordinal);

        var slicedBase = Assert.Throws<MergeConfigException>(() => Parse("""
            slices:
              - sources:
                  - model: org/a
                    layer_range: [0, 8]
                base_model: org/a
              - sources:
                  - model: org/b
                    layer_range: [8, 16]
            merge_method: passthrough
            """));
        Assert.Contains("line 2: a slice's base_model ('org/a') is not supported in a config of several slices", slicedBase.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Several_slices_are_a_frankenmerge_with_each_slices_sources_and_parameters()
    {
        var config = Parse("""
            slices:
              - sources:
                  - model: org/a
                    layer_range: [0, 16]
              - sources:
                  - model: org/b
                    layer_range: [8, 24]
                    parameters: {scale: 0.5}
                parameters:
                  scale: [1, 0]
              - sources:
                  - model: org/a
                    layer_range: [20, 24]
            merge_method: passthrough
            parameters:
              scale: 2
            """);
        Assert.NotNull(config.Slices);
        Assert.Equal(3, config.Slices.Count);
        Assert.Null(config.LayerRange);
        Assert.Equal(["org/a", "org/b"], config.Models.Select(m => m.Model.Text));
        Assert.Equal(new LayerRange(8, 24), config.Slices[1].Sources[0].Range);
        Assert.Equal(16, config.Slices[1].Sources[0].Range.Count);
        Assert.True(config.Slices[1].Parameters.ContainsKey("scale"));
        Assert.True(config.Slices[1].Sources[0].Model.Parameters.ContainsKey("scale"));
        Assert.Empty(config.Slices[2].Parameters);
        Assert.True(config.Parameters.ContainsKey("scale"));
    }

    [Fact]
    public void Malformed_yaml_reports_the_line()
    {
        var error = Assert.Throws<MergeConfigException>(() => Parse("merge_method: ties\nmodels:\n  - model: [unclosed\nbase_model: x\n"));
        Assert.Contains("malformed YAML", error.Message, StringComparison.Ordinal);
        Assert.Matches("line [34]", error.Message);

        var badIndent = Assert.Throws<MergeConfigException>(() => Parse("merge_method: ties\nmodels:\n  - model: a\n   parameters: {weight: 1}\n"));
        Assert.Contains("malformed YAML at line 4", badIndent.Message, StringComparison.Ordinal);

        var tabs = Assert.Throws<MergeConfigException>(() => Parse("merge_method: ties\nmerge_method: linear\n"));
        Assert.Contains("line 2", tabs.Message, StringComparison.Ordinal);

        Assert.Throws<MergeConfigException>(() => Parse(""));
        var notMap = Assert.Throws<MergeConfigException>(() => Parse("- a\n- b\n"));
        Assert.Contains("mapping", notMap.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Missing_method_models_and_bad_dtype_are_all_reported()
    {
        var error = Assert.Throws<MergeConfigException>(() => Parse("dtype: int4\nseed: abc\n"));
        Assert.Contains("missing 'merge_method'", error.Message, StringComparison.Ordinal);
        Assert.Contains("missing 'models'", error.Message, StringComparison.Ordinal);
        Assert.Contains("'dtype' is 'int4'", error.Message, StringComparison.Ordinal);
        Assert.Contains("'seed' must be an integer", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Load_resolves_relative_paths_against_the_config_folder_and_local_resolver_checks_folders()
    {
        var modelDir = Directory.CreateDirectory(Path.Combine(_dir, "experts", "math")).FullName;
        await File.WriteAllTextAsync(Path.Combine(modelDir, "config.json"), "{}");
        var file = Path.Combine(_dir, "merge.yaml");
        await File.WriteAllTextAsync(file, "merge_method: task_arithmetic\nbase_model: org/base@main\nmodels:\n  - model: experts/math\n");
        var config = await MergeConfigParser.LoadAsync(file, CancellationToken.None);
        Assert.Equal(file, config.SourcePath);
        Assert.Equal(modelDir, config.Models[0].Model.LocalPath);

        var resolver = new LocalModelReferenceResolver();
        var resolved = await resolver.ResolveAsync(config.Models[0].Model, CancellationToken.None);
        Assert.Equal(modelDir, resolved.LocalPath);
        Assert.Null(resolved.Commit);
        await Assert.ThrowsAsync<NotSupportedException>(() => resolver.ResolveAsync(config.BaseModel!, CancellationToken.None));
        await Assert.ThrowsAsync<DirectoryNotFoundException>(() =>
            resolver.ResolveAsync(ModelReference.Parse("./missing", _dir), CancellationToken.None));
        await Assert.ThrowsAsync<FileNotFoundException>(() =>
            resolver.ResolveAsync(ModelReference.Parse("./experts", _dir), CancellationToken.None));
    }
}
