using System.Text.Json;
using SensMerging.Core.Lora;
using SensMerging.Core.PyTorch;
using SensMerging.Core.SafeTensors;
using static TorchSharp.torch;

namespace SensMerging.Core.Models;

/// <summary>
/// A Hugging Face model folder: <c>config.json</c> and safetensors weights, single-file (<c>model.safetensors</c>) or
/// sharded (<c>model.safetensors.index.json</c>), or, when it has no safetensors, PyTorch checkpoints
/// (<c>pytorch_model.bin</c>, or <c>pytorch_model.bin.index.json</c> and its shards). Opening validates every weight file's header and that the index agrees
/// with the files; tensor data is read later, on demand.
/// </summary>
public sealed class ModelFolder : IDisposable
{
    /// <summary>The config file name.</summary>
    public const string ConfigFileName = "config.json";

    /// <summary>The single-file PyTorch checkpoint name.</summary>
    public const string PyTorchSingleFileName = "pytorch_model.bin";

    /// <summary>The index of a sharded PyTorch checkpoint.</summary>
    public const string PyTorchIndexFileName = "pytorch_model.bin.index.json";

    private readonly List<WeightFile> _files;
    private readonly Dictionary<string, ModelTensor> _byName;

    private ModelFolder(string path, ModelConfig? config, List<WeightFile> files, IReadOnlyList<ModelTensor> tensors, bool isSharded)
    {
        Path = path;
        Config = config;
        _files = files;
        Tensors = tensors;
        IsSharded = isSharded;
        _byName = tensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
    }

    /// <summary>The folder's full path.</summary>
    public string Path { get; }

    /// <summary>The parsed <c>config.json</c>, or null when the folder has none.</summary>
    public ModelConfig? Config { get; }

    /// <summary>True when the weights come from an index and shards.</summary>
    public bool IsSharded { get; }

    /// <summary>The weight files, in index order.</summary>
    public IReadOnlyList<string> WeightFiles => [.. _files.Where(f => f.Owner is not LoraAdapter).Select(f => f.Path)];

    /// <summary>The LoRA adapter folder applied to the weights, or null.</summary>
    public string? LoraAdapterPath { get; private init; }

    /// <summary>Every tensor, file by file in offset order (the model's natural order).</summary>
    public IReadOnlyList<ModelTensor> Tensors { get; }

    /// <summary>Sum of the tensors' bytes.</summary>
    public long TotalTensorBytes => Tensors.Sum(t => t.ByteLength);

    /// <summary>
    /// The number of transformer blocks: <c>num_hidden_layers</c> of <c>config.json</c>, else one more than the highest
    /// block index among the tensor names (<see cref="Abstractions.LayerGroups.BlockIndex"/>; 0 when none has one). The one
    /// place the merge, its parameters' depths and a frankenmerge's slices take the layer count from.
    /// </summary>
    public int LayerCount => Config?.NumHiddenLayers ?? (Tensors.Select(t => Abstractions.LayerGroups.BlockIndex(t.Name)).DefaultIfEmpty(-1).Max() + 1);

    /// <summary>Opens a folder and validates its weights' headers and index.</summary>
    /// <remarks>
    /// Safetensors weights are preferred; a folder without them is read from PyTorch <c>.bin</c> checkpoints
    /// (<c>pytorch_model.bin</c> or <c>pytorch_model.bin.index.json</c> and its shards) through the restricted unpickler.
    /// </remarks>
    /// <exception cref="ModelFolderException">Missing folder, weights or index files, or an index that disagrees with the files.</exception>
    /// <exception cref="SafeTensorsFormatException">A weight file breaks the safetensors format.</exception>
    /// <exception cref="PyTorchCheckpointException">A <c>.bin</c> checkpoint is malformed or names a forbidden pickle global.</exception>
    public static ModelFolder Open(string path) => Open(path, null);

    /// <summary>
    /// Opens a folder with a PEFT LoRA adapter applied (a <c>model+lora</c> reference): every weight the adapter targets
    /// reads as <c>W + scale * B A</c> (<see cref="LoraAdapter"/>); null opens the folder as it is.
    /// </summary>
    /// <exception cref="ModelFolderException">As <see cref="Open(string)"/>, or an adapter that is invalid or does not fit the model.</exception>
    public static ModelFolder Open(string path, string? loraAdapterPath)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var full = System.IO.Path.GetFullPath(path);
        if (!Directory.Exists(full))
        {
            throw new ModelFolderException($"model folder '{full}' does not exist");
        }
        var configPath = System.IO.Path.Combine(full, ConfigFileName);
        var config = File.Exists(configPath) ? ModelConfig.Parse(File.ReadAllText(configPath), configPath) : null;
        var indexPath = System.IO.Path.Combine(full, ShardedSafeTensorsWriter.IndexFileName);
        var singlePath = System.IO.Path.Combine(full, ShardedSafeTensorsWriter.SingleFileName);
        var binIndexPath = System.IO.Path.Combine(full, PyTorchIndexFileName);
        var binSinglePath = System.IO.Path.Combine(full, PyTorchSingleFileName);
        var files = new List<WeightFile>();
        try
        {
            bool sharded;
            if (File.Exists(indexPath))
            {
                sharded = true;
                OpenSharded(full, indexPath, files, OpenSafeTensors);
            }
            else if (File.Exists(singlePath))
            {
                sharded = false;
                files.Add(OpenSafeTensors(singlePath));
            }
            else if (File.Exists(binIndexPath))
            {
                sharded = true;
                OpenSharded(full, binIndexPath, files, OpenPyTorch);
            }
            else if (File.Exists(binSinglePath))
            {
                sharded = false;
                files.Add(OpenPyTorch(binSinglePath));
            }
            else
            {
                throw new ModelFolderException($"model folder '{full}' has none of {ShardedSafeTensorsWriter.SingleFileName}, {ShardedSafeTensorsWriter.IndexFileName}, {PyTorchSingleFileName}, {PyTorchIndexFileName}");
            }
            var tensors = new List<ModelTensor>();
            var seen = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var file in files)
            {
                foreach (var t in file.Tensors)
                {
                    if (!seen.TryAdd(t.Name, file.Path))
                    {
                        throw new ModelFolderException($"model folder '{full}': tensor '{t.Name}' is in both {seen[t.Name]} and {file.Path}");
                    }
                    tensors.Add(t);
                }
            }
            if (loraAdapterPath is not null)
            {
                var adapter = LoraAdapter.Open(loraAdapterPath);
                files.Add(new WeightFile(adapter.Path, adapter, []));
                return new ModelFolder(full, config, files, adapter.ApplyTo(full, tensors), sharded) { LoraAdapterPath = adapter.Path };
            }
            return new ModelFolder(full, config, files, tensors, sharded);
        }
        catch
        {
            foreach (var f in files)
            {
                f.Owner.Dispose();
            }
            throw;
        }
    }

    /// <summary>The tensor, or false.</summary>
    public bool TryGetTensor(string name, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out ModelTensor? tensor) =>
        _byName.TryGetValue(name, out tensor);

    /// <summary>The tensor; throws naming the tensor and folder.</summary>
    public ModelTensor GetTensor(string name) =>
        _byName.TryGetValue(name, out var t) ? t : throw new KeyNotFoundException($"model '{Path}' has no tensor '{name}'");

    /// <summary>Reads <c>destination.Length</c> bytes of a tensor from <paramref name="offsetInTensor"/>.</summary>
    public static void ReadBytes(ModelTensor tensor, long offsetInTensor, Span<byte> destination)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        tensor.Source.ReadBytes(offsetInTensor, destination);
    }

    /// <summary>Reads a range of a tensor's bytes into a contiguous CPU tensor's storage.</summary>
    public static void ReadInto(ModelTensor tensor, long offsetInTensor, Tensor destination)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        ArgumentNullException.ThrowIfNull(destination);
        TensorBytes.ForEachSpan(destination, (span, at) => tensor.Source.ReadBytes(offsetInTensor + at, span));
    }

    /// <summary>Reads a tensor into a new TorchSharp tensor of its dtype (not for hot paths).</summary>
    public Tensor ReadTensor(string name)
    {
        var t = GetTensor(name);
        var result = TorchSharp.torch.empty([.. t.Shape], t.DType.RequireScalarType());
        try
        {
            ReadInto(t, 0, result);
            return result;
        }
        catch
        {
            result.Dispose();
            throw;
        }
    }

    public void Dispose()
    {
        foreach (var f in _files)
        {
            f.Owner.Dispose();
        }
    }

    /// <summary>Opens one weight file by its extension (<c>.safetensors</c>, else a PyTorch checkpoint).</summary>
    internal static WeightFile OpenWeightFile(string path) =>
        path.EndsWith(".safetensors", StringComparison.Ordinal) ? OpenSafeTensors(path) : OpenPyTorch(path);

    private static WeightFile OpenSafeTensors(string path)
    {
        var file = SafeTensorsFile.Open(path);
        return new WeightFile(file.Path, file, [.. file.Tensors.Select(t =>
            new ModelTensor(t.Name, t.DType, t.Shape, file.Path, file.DataStart + t.Begin, t.ByteLength) { Source = new SafeTensorsSource(file, t) })]);
    }

    private static WeightFile OpenPyTorch(string path)
    {
        var checkpoint = PyTorchCheckpoint.Open(path);
        return new WeightFile(checkpoint.Path, checkpoint, [.. checkpoint.Tensors.Select(t =>
            new ModelTensor(t.Name, t.DType, t.Shape, checkpoint.Path, t.StorageDataOffset + (t.StorageOffset * t.DType.Size), t.ByteLength) { Source = new PyTorchSource(checkpoint, t) })]);
    }

    private static void OpenSharded(string folder, string indexPath, List<WeightFile> files, Func<string, WeightFile> open)
    {
        Dictionary<string, string> weightMap;
        try
        {
            weightMap = ReadWeightMap(indexPath);
        }
        catch (JsonException ex)
        {
            throw new ModelFolderException($"{indexPath}: not valid JSON: {ex.Message}", ex);
        }
        var fileNames = weightMap.Values.Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal).ToList();
        foreach (var name in fileNames)
        {
            if (name.Contains('/', StringComparison.Ordinal) || name.Contains('\\', StringComparison.Ordinal) || name is "." or "..")
            {
                throw new ModelFolderException($"{indexPath}: weight file name '{name}' must be a plain file name in the folder");
            }
            var shardPath = System.IO.Path.Combine(folder, name);
            if (!File.Exists(shardPath))
            {
                throw new ModelFolderException($"{indexPath}: weight file '{name}' listed in the index does not exist");
            }
        }
        foreach (var name in fileNames)
        {
            files.Add(open(System.IO.Path.Combine(folder, name)));
        }
        foreach (var file in files)
        {
            var fileName = System.IO.Path.GetFileName(file.Path);
            foreach (var t in file.Tensors)
            {
                if (!weightMap.TryGetValue(t.Name, out var mapped))
                {
                    throw new ModelFolderException($"{indexPath}: tensor '{t.Name}' in {fileName} is missing from the index's weight_map");
                }
                if (mapped != fileName)
                {
                    throw new ModelFolderException($"{indexPath}: the index maps tensor '{t.Name}' to {mapped}, but it is in {fileName}");
                }
            }
        }
        var present = files.SelectMany(f => f.Tensors.Select(t => (t.Name, System.IO.Path.GetFileName(f.Path)))).ToHashSet();
        foreach (var (tensor, fileName) in weightMap)
        {
            if (!present.Contains((tensor, fileName)))
            {
                throw new ModelFolderException($"{indexPath}: the index maps tensor '{tensor}' to {fileName}, which has no such tensor");
            }
        }
    }

    private static Dictionary<string, string> ReadWeightMap(string indexPath)
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(indexPath));
        if (doc.RootElement.ValueKind != JsonValueKind.Object
            || !doc.RootElement.TryGetProperty("weight_map", out var map)
            || map.ValueKind != JsonValueKind.Object)
        {
            throw new ModelFolderException($"{indexPath}: expected an object with a 'weight_map' object");
        }
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var p in map.EnumerateObject())
        {
            if (p.Value.ValueKind != JsonValueKind.String)
            {
                throw new ModelFolderException($"{indexPath}: weight_map entry '{p.Name}' is {p.Value.ValueKind}, expected a file name");
            }
            if (!result.TryAdd(p.Name, p.Value.GetString()!))
            {
                throw new ModelFolderException($"{indexPath}: weight_map lists tensor '{p.Name}' twice");
            }
        }
        if (result.Count == 0)
        {
            throw new ModelFolderException($"{indexPath}: weight_map is empty");
        }
        return result;
    }
}

/// <summary>One opened weight file of a folder: its tensors and what to dispose.</summary>
internal sealed record WeightFile(string Path, IDisposable Owner, IReadOnlyList<ModelTensor> Tensors);
