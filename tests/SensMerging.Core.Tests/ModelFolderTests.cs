using System.Text.Json.Nodes;
using SensMerging.Core.Models;
using SensMerging.Core.SafeTensors;

namespace SensMerging.Core.Tests;

public sealed class ModelFolderTests
{
    [Fact]
    public void Sharded_write_produces_index_and_reads_back()
    {
        using var dir = new SafeTensorsTempDir();
        var model = dir.File("m");
        Directory.CreateDirectory(model);
        var plan = Enumerable.Range(0, 5).Select(i => new TensorPlanEntry($"model.layers.{i}.w", SafeTensorsDType.F32, [4, 4])).ToList();
        IReadOnlyList<WrittenFile> files;
        using (var writer = new ShardedSafeTensorsWriter(model, plan, maxShardBytes: 130))
        {
            Assert.Equal(3, writer.Shards.Count);
            foreach (var (t, i) in plan.Select((t, i) => (t, i)))
            {
                var values = Enumerable.Range(0, 16).Select(k => (float)(i * 100 + k)).ToArray();
                var bytes = SafeTensorsTestData.Bytes(values);
                writer.WriteChunk(t.Name, 0, bytes.AsSpan(0, 24));
                writer.WriteChunk(t.Name, 24, bytes.AsSpan(24));
            }
            files = writer.Complete();
        }
        Assert.Equal(["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors", "model.safetensors.index.json"],
            files.Select(f => Path.GetFileName(f.Path)));
        foreach (var f in files)
        {
            Assert.Equal(new FileInfo(f.Path).Length, f.Size);
            Assert.Equal(Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(File.ReadAllBytes(f.Path))), f.Sha256);
        }
        var index = JsonNode.Parse(File.ReadAllText(Path.Combine(model, "model.safetensors.index.json")))!;
        Assert.Equal(5 * 64, (long)index["metadata"]!["total_size"]!);
        Assert.Equal("model-00003-of-00003.safetensors", (string)index["weight_map"]!["model.layers.4.w"]!);

        using var folder = ModelFolder.Open(model);
        Assert.True(folder.IsSharded);
        Assert.Null(folder.Config);
        Assert.Equal(plan.Select(p => p.Name), folder.Tensors.Select(t => t.Name));
        using var t3 = folder.ReadTensor("model.layers.3.w");
        Assert.Equal(315f, t3[3, 3].item<float>());
    }

    [Fact]
    public void Single_file_when_it_fits_and_config_is_parsed()
    {
        using var dir = new SafeTensorsTempDir();
        var model = dir.File("m");
        Directory.CreateDirectory(model);
        File.WriteAllText(Path.Combine(model, "config.json"),
            """{"model_type":"llama","num_hidden_layers":2,"hidden_size":8,"vocab_size":32,"tie_word_embeddings":false,"torch_dtype":"bfloat16","extra":[1]}""");
        using (var writer = new ShardedSafeTensorsWriter(model, [new TensorPlanEntry("a", SafeTensorsDType.U8, [2])], 1000))
        {
            writer.WriteTensor("a", [1, 2]);
            Assert.Single(writer.Complete());
        }
        using var folder = ModelFolder.Open(model);
        Assert.False(folder.IsSharded);
        Assert.Equal(new ModelConfig("llama", 2, 8, 32, false, "bfloat16", folder.Config!.RawJson), folder.Config);
        Assert.Contains("\"extra\"", folder.Config.RawJson, StringComparison.Ordinal);
        var tensor = Assert.Single(folder.Tensors);
        Assert.Equal(Path.Combine(model, "model.safetensors"), tensor.FilePath);
        Assert.Equal(2, tensor.ByteLength);
        Assert.Equal(0, tensor.FileOffset % 8);
    }

    [Fact]
    public void Index_naming_a_missing_file_is_an_error()
    {
        using var dir = new SafeTensorsTempDir();
        var model = MakeSharded(dir);
        File.Delete(Path.Combine(model, "model-00002-of-00002.safetensors"));
        var ex = Assert.Throws<ModelFolderException>(() => ModelFolder.Open(model));
        Assert.Contains("weight file 'model-00002-of-00002.safetensors' listed in the index does not exist", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Index_disagreeing_with_the_files_is_an_error()
    {
        using var dir = new SafeTensorsTempDir();
        var model = MakeSharded(dir);
        var indexPath = Path.Combine(model, "model.safetensors.index.json");
        var index = JsonNode.Parse(File.ReadAllText(indexPath))!;
        index["weight_map"]!["b"] = "model-00001-of-00002.safetensors";
        File.WriteAllText(indexPath, index.ToJsonString());
        var ex = Assert.Throws<ModelFolderException>(() => ModelFolder.Open(model));
        Assert.Contains("maps tensor 'b' to model-00001-of-00002.safetensors, which has no such tensor", ex.Message, StringComparison.Ordinal);

        index["weight_map"]!["b"] = "model-00002-of-00002.safetensors";
        index["weight_map"]!["ghost"] = "model-00002-of-00002.safetensors";
        File.WriteAllText(indexPath, index.ToJsonString());
        ex = Assert.Throws<ModelFolderException>(() => ModelFolder.Open(model));
        Assert.Contains("maps tensor 'ghost' to model-00002-of-00002.safetensors, which has no such tensor", ex.Message, StringComparison.Ordinal);

        index["weight_map"]!.AsObject().Remove("ghost");
        index["weight_map"]!.AsObject().Remove("c");
        File.WriteAllText(indexPath, index.ToJsonString());
        ex = Assert.Throws<ModelFolderException>(() => ModelFolder.Open(model));
        Assert.Contains("tensor 'c' in model-00001-of-00002.safetensors is missing from the index", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Folder_without_weights_is_an_error()
    {
        using var dir = new SafeTensorsTempDir();
        File.WriteAllText(dir.File("model.bin"), "x");
        var ex = Assert.Throws<ModelFolderException>(() => ModelFolder.Open(dir.Path));
        Assert.Contains("has none of model.safetensors, model.safetensors.index.json, pytorch_model.bin, pytorch_model.bin.index.json", ex.Message, StringComparison.Ordinal);
        Assert.Throws<ModelFolderException>(() => ModelFolder.Open(dir.File("nope")));
    }

    [Fact]
    public void Merged_model_writer_moves_into_place_only_on_commit()
    {
        using var dir = new SafeTensorsTempDir();
        var source = dir.File("src");
        Directory.CreateDirectory(source);
        File.WriteAllText(Path.Combine(source, "config.json"), """{"model_type":"llama","torch_dtype":"float32"}""");
        File.WriteAllText(Path.Combine(source, "tokenizer.json"), "{}");
        File.WriteAllText(Path.Combine(source, "generation_config.json"), "{}");
        var output = dir.File("out");

        using (var abandoned = MergedModelWriter.Create(output, overwrite: false))
        {
            abandoned.CopyConfig(source, "bfloat16");
            Assert.StartsWith(output + ".partial-", abandoned.WorkPath, StringComparison.Ordinal);
        }
        Assert.False(Directory.Exists(output));
        Assert.Single(Directory.GetDirectories(dir.Path));

        using (var writer = MergedModelWriter.Create(output, overwrite: false))
        {
            writer.CopyConfig(source, "bfloat16");
            writer.CopyTokenizer(source);
            writer.WriteModelCard(new ModelCard { Title = "t", Method = "ties", Inputs = [new("b", "base"), new("e|1", "expert", "weight 0.5")], Parameters = [new("density", "0.5")], BodyMarkdown = "Registry id: X" });
            writer.Commit();
        }
        Assert.Equal("bfloat16", (string)JsonNode.Parse(File.ReadAllText(Path.Combine(output, "config.json")))!["torch_dtype"]!);
        Assert.True(File.Exists(Path.Combine(output, "tokenizer.json")));
        Assert.True(File.Exists(Path.Combine(output, "generation_config.json")));
        var card = File.ReadAllText(Path.Combine(output, "README.md"));
        Assert.Contains("`ties`", card, StringComparison.Ordinal);
        Assert.Contains("| e\\|1 | expert | weight 0.5 |", card, StringComparison.Ordinal);
        Assert.Contains("| density | 0.5 |", card, StringComparison.Ordinal);
        Assert.Contains("Registry id: X", card, StringComparison.Ordinal);
        Assert.Contains("base_model:\n- \"b\"", card, StringComparison.Ordinal);

        var ex = Assert.Throws<ModelFolderException>(() => MergedModelWriter.Create(output, overwrite: false));
        Assert.Contains("already exists and is not empty", ex.Message, StringComparison.Ordinal);

        using (var replace = MergedModelWriter.Create(output, overwrite: true))
        {
            replace.WriteModelCard(new ModelCard { Title = "new", Method = "linear" });
            Assert.True(File.Exists(Path.Combine(output, "config.json")));
            replace.Commit();
        }
        Assert.False(File.Exists(Path.Combine(output, "config.json")));
        Assert.Single(Directory.GetDirectories(dir.Path), d => d != source);
    }

    private static string MakeSharded(SafeTensorsTempDir dir)
    {
        var model = dir.File("m");
        Directory.CreateDirectory(model);
        using var writer = new ShardedSafeTensorsWriter(model, [new("a", SafeTensorsDType.U8, [4]), new("c", SafeTensorsDType.U8, [4]), new("b", SafeTensorsDType.U8, [4])], 8);
        writer.WriteTensor("a", [1, 2, 3, 4]);
        writer.WriteTensor("c", [1, 2, 3, 4]);
        writer.WriteTensor("b", [5, 6, 7, 8]);
        writer.Complete();
        return model;
    }
}
