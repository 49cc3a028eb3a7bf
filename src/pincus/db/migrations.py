"""Schema versions. Each entry moves the schema one version up; PRAGMA user_version records where we are."""

MIGRATIONS: list[str] = [
    # 1: networks, instances and devices with their config, volatile keys
    """
    CREATE TABLE networks (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE networks_config (
        network_id INTEGER NOT NULL REFERENCES networks(id) ON DELETE CASCADE,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (network_id, key)
    );
    CREATE TABLE instances (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL
    );
    CREATE TABLE instances_config (
        instance_id INTEGER NOT NULL REFERENCES instances(id) ON DELETE CASCADE,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (instance_id, key)
    );
    CREATE TABLE instances_volatile (
        instance_id INTEGER NOT NULL REFERENCES instances(id) ON DELETE CASCADE,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (instance_id, key)
    );
    CREATE TABLE devices (
        id INTEGER PRIMARY KEY,
        instance_id INTEGER NOT NULL REFERENCES instances(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        type TEXT NOT NULL,
        UNIQUE (instance_id, name)
    );
    CREATE TABLE devices_config (
        device_id INTEGER NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (device_id, key)
    );
    """,
    # 2: what the daemon needs to find a running instance again after a restart
    """
    CREATE TABLE instances_runtime (
        instance_id INTEGER PRIMARY KEY REFERENCES instances(id) ON DELETE CASCADE,
        pid INTEGER NOT NULL,
        start_time INTEGER NOT NULL
    );
    """,
    # 3: find devices by a config value (duplicate static addresses) without scanning every device
    """
    CREATE INDEX devices_config_key_value ON devices_config (key, value);
    """,
    # 4: profiles, and the ordered profiles of each instance (existing instances get "default")
    """
    CREATE TABLE profiles (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        description TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE profiles_config (
        profile_id INTEGER NOT NULL REFERENCES profiles(id) ON DELETE CASCADE,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (profile_id, key)
    );
    CREATE TABLE profiles_devices (
        id INTEGER PRIMARY KEY,
        profile_id INTEGER NOT NULL REFERENCES profiles(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        type TEXT NOT NULL,
        UNIQUE (profile_id, name)
    );
    CREATE TABLE profiles_devices_config (
        device_id INTEGER NOT NULL REFERENCES profiles_devices(id) ON DELETE CASCADE,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (device_id, key)
    );
    CREATE TABLE instances_profiles (
        instance_id INTEGER NOT NULL REFERENCES instances(id) ON DELETE CASCADE,
        profile_id INTEGER NOT NULL REFERENCES profiles(id) ON DELETE RESTRICT,
        apply_order INTEGER NOT NULL,
        PRIMARY KEY (instance_id, profile_id)
    );
    INSERT INTO profiles (name, description) VALUES ('default', 'Default pincus profile');
    INSERT INTO instances_profiles (instance_id, profile_id, apply_order)
        SELECT id, (SELECT id FROM profiles WHERE name = 'default'), 0 FROM instances;
    """,
    # 5: images (Incus's image store: one row per fingerprint), their properties and aliases
    """
    CREATE TABLE images (
        id INTEGER PRIMARY KEY,
        fingerprint TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL,
        filename TEXT NOT NULL DEFAULT '',
        size INTEGER NOT NULL,
        public INTEGER NOT NULL DEFAULT 0,
        auto_update INTEGER NOT NULL DEFAULT 0,
        architecture TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL DEFAULT '',
        uploaded_at TEXT NOT NULL,
        last_used_at TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE images_properties (
        image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (image_id, key)
    );
    CREATE TABLE images_aliases (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        description TEXT NOT NULL DEFAULT ''
    );
    """,
    # 6: storage pools with their config, and their volumes (instance roots, unpacked images)
    """
    CREATE TABLE storage_pools (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        driver TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE storage_pools_config (
        storage_pool_id INTEGER NOT NULL REFERENCES storage_pools(id) ON DELETE CASCADE,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (storage_pool_id, key)
    );
    CREATE TABLE storage_volumes (
        id INTEGER PRIMARY KEY,
        storage_pool_id INTEGER NOT NULL REFERENCES storage_pools(id) ON DELETE RESTRICT,
        name TEXT NOT NULL,
        type TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        UNIQUE (storage_pool_id, name, type)
    );
    CREATE TABLE storage_volumes_config (
        storage_volume_id INTEGER NOT NULL REFERENCES storage_volumes(id) ON DELETE CASCADE,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (storage_volume_id, key)
    );
    """,
    # 7: server config (MEMBER '' for cluster-wide keys, else the member a local key belongs to), the
    # cluster's members (id is the member's dqlite node id) and the join tokens not used yet
    """
    CREATE TABLE config (
        member TEXT NOT NULL DEFAULT '',
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (member, key)
    );
    CREATE TABLE members (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        address TEXT NOT NULL UNIQUE,
        heartbeat REAL NOT NULL DEFAULT 0,
        state TEXT NOT NULL DEFAULT 'online',
        description TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE join_tokens (
        name TEXT PRIMARY KEY,
        secret TEXT NOT NULL,
        expires_at REAL NOT NULL
    );
    """,
    # 8: the cluster member an instance lives on ('' on a single server)
    """
    ALTER TABLE instances ADD COLUMN location TEXT NOT NULL DEFAULT '';
    """,
    # 9: networks in a cluster: 'pending' until created on every member; each member's own keys
    # (parent, mtu, ...) and its state there
    """
    ALTER TABLE networks ADD COLUMN status TEXT NOT NULL DEFAULT 'created';
    CREATE TABLE networks_members (
        network_id INTEGER NOT NULL REFERENCES networks(id) ON DELETE CASCADE,
        member TEXT NOT NULL,
        state TEXT NOT NULL,
        message TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (network_id, member)
    );
    CREATE TABLE networks_member_config (
        network_id INTEGER NOT NULL REFERENCES networks(id) ON DELETE CASCADE,
        member TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (network_id, member, key)
    );
    """,
]
