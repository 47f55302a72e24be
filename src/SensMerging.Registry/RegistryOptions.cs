namespace SensMerging.Registry;

/// <summary>How the registry file is opened.</summary>
public enum RegistryConnection
{
    /// <summary>
    /// LiteDB shared mode: the file is opened per operation under a named mutex, so several processes (a merge and
    /// <c>serve</c>) can use it at once. The default.
    /// </summary>
    Shared,

    /// <summary>LiteDB direct mode: this process holds the file open exclusively. Single-process tools and benchmarks only.</summary>
    Exclusive,
}

/// <summary>Settings of <see cref="LiteDbMergeRegistry"/>.</summary>
public sealed class RegistryOptions
{
    /// <summary>The default registry file, relative to the working folder.</summary>
    public const string DefaultPath = "registry/merges.db";

    /// <summary>The LiteDB file; relative paths are taken from the working folder. Its folder is created when missing.</summary>
    public string Path { get; set; } = DefaultPath;

    public RegistryConnection Connection { get; set; } = RegistryConnection.Shared;

    /// <summary>Turn running records of ended processes into failed ones when the registry opens (and before each list).</summary>
    public bool MarkAbandoned { get; set; } = true;

    /// <summary>
    /// Check on <see cref="IMergeRegistry.CompleteAsync"/> that every listed output file exists with its recorded size.
    /// </summary>
    public bool VerifyOutputFiles { get; set; } = true;
}
