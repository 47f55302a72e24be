using System.Text;
using SensMerging.Core.Engine;
using SensMerging.Core.Models;
using SensMerging.Core.SafeTensors;

namespace SensMerging.Core.Tests;

/// <summary>Temp folders and hand-made safetensors bytes for the tests; models opened through it are closed with it.</summary>
internal sealed class SafeTensorsTempDir : IDisposable
{
    private readonly List<ModelFolder> _opened = [];

    public SafeTensorsTempDir()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "smcore-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    /// <summary>Writes an 8-byte length, the header text exactly as given, then <paramref name="dataBytes"/> zero bytes.</summary>
    public string Raw(string name, string headerJson, int dataBytes, ulong? lengthOverride = null)
    {
        var json = Encoding.UTF8.GetBytes(headerJson);
        var bytes = new byte[8 + json.Length + dataBytes];
        BitConverter.TryWriteBytes(bytes.AsSpan(0, 8), lengthOverride ?? (ulong)json.Length);
        json.CopyTo(bytes, 8);
        var path = File(name);
        System.IO.File.WriteAllBytes(path, bytes);
        return path;
    }

    /// <summary>Opens the model folder at <paramref name="path"/> as a merge input (closed when this folder is disposed).</summary>
    public MergeInput Input(string name, string path)
    {
        var folder = ModelFolder.Open(path);
        _opened.Add(folder);
        return new MergeInput(name, folder);
    }

    public void Dispose()
    {
        foreach (var m in _opened)
        {
            m.Dispose();
        }
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

internal static class SafeTensorsTestData
{
    public static string Write(string path, params (string Name, SafeTensorsDType DType, long[] Shape, byte[] Bytes)[] tensors)
    {
        var plan = tensors.Select(t => new TensorPlanEntry(t.Name, t.DType, t.Shape)).ToList();
        using var writer = new SafeTensorsWriter(path, plan, new Dictionary<string, string> { ["format"] = "pt" });
        foreach (var t in tensors)
        {
            writer.WriteTensor(t.Name, t.Bytes);
        }
        writer.Complete();
        return path;
    }

    public static byte[] Bytes<T>(params T[] values)
        where T : unmanaged => System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()).ToArray();
}
